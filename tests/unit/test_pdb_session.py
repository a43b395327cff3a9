"""tools/pdb_session.py (make pdb): the ssh command it runs, from the inventory's host."""

from __future__ import annotations

import sys

import pdb_session
import pytest

from apphost import AppHost


def host(**changes: str) -> AppHost:
    values = dict(
        host="somevm", user="root", port="22", ssh_args="-F /x/ssh_config", name="localvm",
        secrets="/s", nginx_port="80", app_name="sample_app", health_path="/healthz",
        profiling="True", pdb="True", pdb_base_port="4440",
        pdb_attach_command="/srv/sample_app/bin/pdb-attach",
    )  # fmt: skip
    values.update(changes)
    return AppHost(**values)


@pytest.fixture
def run(monkeypatch):
    calls: list[list[str]] = []

    def start(target: AppHost, *argv: str) -> int:
        monkeypatch.setattr(pdb_session, "app_host", lambda env, name: target)
        monkeypatch.setattr(pdb_session.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
        monkeypatch.setattr(sys, "argv", ["pdb_session.py", *argv])
        return pdb_session.main()

    start.calls = calls  # type: ignore[attr-defined]
    return start


def test_it_runs_the_attach_command_for_that_worker_in_a_terminal(run):
    assert run(host(), "--worker", "3") == 0
    (command,) = run.calls
    assert command[:3] == ["ssh", "-F", "/x/ssh_config"] and "-t" in command
    assert command[-2:] == ["root@somevm", "/srv/sample_app/bin/pdb-attach --worker 3"]


def test_poke_and_sudo_for_a_user_other_than_root(run):
    run(host(user="deploy"), "--worker", "1", "--poke")
    assert run.calls[0][-1] == "sudo /srv/sample_app/bin/pdb-attach --worker 1 --poke"


def test_pdb_off_in_the_inventory_is_a_clear_refusal(run, capsys):
    assert run(host(pdb="False")) == 1
    assert run.calls == []
    assert "pdb_enabled is off" in capsys.readouterr().err
