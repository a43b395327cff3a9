"""Unit tests for nspawnvm.lab: names, indices and addresses of a lab's VMs, which VMs the lab
commands act on, and their output."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from nspawnvm import lab
from nspawnvm.cli import parse_args
from nspawnvm.errors import LocalVMError
from nspawnvm.lab import (
    check_count,
    lab_bridge,
    lab_machine,
    lab_machines,
    member_indices,
    status_line,
    summary_line,
    validate_lab_name,
)

SUBNET = IPv4Network("10.231.6.0/24")

# --- names and addresses ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lab", "hx", "a", "web-", "abcdefghij", "a1b"])
def test_valid_lab_names(name: str) -> None:
    assert validate_lab_name(name) == name


@pytest.mark.parametrize("name", ["", "1lab", "Lab", "la_b", "abcdefghijk", "web1", "-lab"])
def test_invalid_lab_names(name: str) -> None:
    with pytest.raises(LocalVMError, match="invalid lab name"):
        validate_lab_name(name)


def test_lab_vms_share_bridge_and_subnet_with_addresses_by_index(tmp_path: Path) -> None:
    machines = lab_machines("hx", SUBNET, range(1, 4), tmp_path)
    assert [m.name for m in machines] == ["hx1", "hx2", "hx3"]
    assert {m.bridge for m in machines} == {lab_bridge("hx")} == {"br-hx"}
    assert [m.index for m in machines] == [1, 2, 3]
    assert [str(m.vm_address) for m in machines] == ["10.231.6.2", "10.231.6.3", "10.231.6.4"]
    assert {m.host_address for m in machines} == {IPv4Address("10.231.6.1")}
    assert machines[1].dir == tmp_path / "hx2"


def test_longest_lab_name_fits_interfaces() -> None:
    machine = lab_machine("abcdefghij", 9, SUBNET)
    assert len(machine.name) == 11
    assert len(machine.iface) <= 15 and len(machine.host_iface) <= 15


def test_vm_name_too_long_for_its_index() -> None:
    with pytest.raises(LocalVMError, match="cannot have a VM 10"):
        lab_machine("abcdefghij", 10, SUBNET)


@pytest.mark.parametrize(("count", "ok"), [(1, True), (253, True), (0, False), (254, False)])
def test_count_must_fit_the_subnet(count: int, ok: bool) -> None:
    if ok:
        assert check_count(count, SUBNET) == count
    else:
        with pytest.raises(LocalVMError, match="--count must be 1 to 253"):
            check_count(count, SUBNET)


def test_member_indices_are_the_labs_vms_only() -> None:
    names = ["hx3", "hx1", "hx12", "hx", "hx01", "hx1a", "hxy1", "flaskvm", "hx2.tmp", "ahx1"]
    assert member_indices("hx", names) == [1, 3, 12]
    assert member_indices("web-", ["web-1", "web-2", "web1"]) == [1, 2]


def test_output_lines(tmp_path: Path) -> None:
    machine = lab_machine("hx", 2, SUBNET, tmp_path)
    assert summary_line(machine).split() == [
        "hx2", "10.231.6.3", "ssh", "-F", str(tmp_path / "hx2/ssh_config"), "hx2",
    ]  # fmt: skip
    assert status_line(machine, "running").split() == ["hx2", "running", "10.231.6.3"]


# --- which VMs the lab commands act on --------------------------------------------------------


@pytest.fixture
def lab_root(tmp_path: Path, monkeypatch) -> Path:
    """A state root with hx1, hx2 and hx4 (hx3 destroyed), no locks, no host changes."""
    for name in ("hx1", "hx2", "hx4", "hy1", "flaskvm"):
        (tmp_path / name / "rootfs").mkdir(parents=True)
    monkeypatch.setattr(lab, "vm_lock", lambda _m: contextlib.nullcontext())
    return tmp_path


@pytest.mark.parametrize("command", ["stop", "destroy"])
def test_lab_down_acts_on_every_existing_vm_then_the_bridge(lab_root, monkeypatch, command) -> None:
    calls: list[tuple[str, ...]] = []

    def handler(machine, _args) -> int:
        calls.append((command, machine.name, str(machine.bridge)))
        return 0

    monkeypatch.setattr(lab, "cmd_destroy" if command == "destroy" else "cmd_stop", handler)
    monkeypatch.setattr(lab, "release_bridge", lambda *a: calls.append(("release", *map(str, a))))
    args = parse_args(["--name", "hx", "lab", command])
    assert lab.lab_down("hx", SUBNET, args, lab_root) == 0
    assert calls == [
        (command, "hx1", "br-hx"),
        (command, "hx2", "br-hx"),
        (command, "hx4", "br-hx"),  # beyond any --count, and despite the gap
        ("release", "br-hx", "None", str(lab_root)),
    ]


def test_lab_status_exit_0_only_if_all_run(lab_root, monkeypatch, capsys) -> None:
    running = {"hx1", "hx2", "hx4"}
    monkeypatch.setattr(lab, "vm_running", lambda m: m.name in running)
    args = parse_args(["lab", "status"])
    assert lab.lab_status("hx", SUBNET, args, lab_root) == 0
    assert [line.split()[:2] for line in capsys.readouterr().out.splitlines()] == [
        ["hx1", "running"],
        ["hx2", "running"],
        ["hx4", "running"],
    ]
    running.discard("hx2")
    assert lab.lab_status("hx", SUBNET, args, lab_root) == 1
    assert "hx2          stopped" in capsys.readouterr().out


def test_lab_status_with_count_reports_missing_vms(lab_root, monkeypatch, capsys) -> None:
    monkeypatch.setattr(lab, "vm_running", lambda m: m.rootfs.exists())
    args = parse_args(["lab", "status", "--count", "5"])
    assert lab.lab_status("hx", SUBNET, args, lab_root) == 1
    lines = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
    assert lines[2] == ["hx3", "absent"] and lines[4] == ["hx5", "absent"]


def test_lab_status_of_no_vms_fails(tmp_path: Path, capsys) -> None:
    assert lab.lab_status("hx", SUBNET, parse_args(["lab", "status"]), tmp_path) == 1
    assert capsys.readouterr().out == ""
