"""Unit tests for nspawnvm.commands: the decisions of status and up, and the ssh subcommand."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from nspawnvm import commands
from nspawnvm.cli import parse_args
from nspawnvm.commands import (
    changed_settings,
    cmd_ssh,
    has_stale_state,
    machine_status,
    up_action,
)

# --- status and up decisions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alive", "rootfs", "expected"),
    [(True, True, "running"), (False, True, "stopped"), (False, False, "absent")],
)
def test_machine_status(alive: bool, rootfs: bool, expected: str) -> None:
    assert machine_status(alive, rootfs) == expected


def test_stale_state_means_state_without_process(make_state) -> None:
    state = make_state()
    assert has_stale_state(state, nspawn_alive=False)
    assert not has_stale_state(state, nspawn_alive=True)
    assert not has_stale_state(None, nspawn_alive=False)


@pytest.mark.parametrize(
    ("nspawn", "init", "ssh", "expected"),
    [
        (True, True, True, "reuse"),
        (False, True, True, "reuse"),  # orphaned but reachable: leave it alone
        (True, True, False, "repair"),
        (False, True, False, "restart"),
        (False, False, False, "boot"),
    ],
)
def test_up_action(nspawn: bool, init: bool, ssh: bool, expected: str) -> None:
    assert up_action(nspawn, init, ssh) == expected


def test_changed_settings_of_a_running_vm(make_state, machine) -> None:
    assert changed_settings(make_state(), machine) == []
    bridged = replace(machine, bridge="br-lab", index=2)
    assert changed_settings(make_state(), bridged) == ["bridge none, not br-lab", "index 1, not 2"]
    lab2 = make_state(bridge="br-lab", index=2, subnet="10.231.6.0/24")
    assert changed_settings(lab2, bridged) == ["subnet 10.231.6.0/24, not 10.231.7.0/24"]


# --- ssh --------------------------------------------------------------------------------------


def test_ssh_command_execs_ssh_with_config(machine, monkeypatch) -> None:
    machine.dir.mkdir(parents=True)
    machine.ssh_config.write_text("Host lvtest\n")
    calls = []
    monkeypatch.setattr(commands, "vm_running", lambda _m: True)
    monkeypatch.setattr(os, "execvpe", lambda *a: calls.append(a))
    cmd_ssh(machine, parse_args(["ssh", "--", "apt-get", "update"]))
    assert calls[0][1] == ["ssh", "-F", str(machine.ssh_config), "lvtest", "apt-get", "update"]
