"""Unit tests for nspawnvm.processes: the nspawn command line and recognising the VM's processes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nspawnvm.processes import (
    is_namespace_init,
    is_nspawn_for,
    nspawn_command,
    parse_children,
    parse_nspid,
)
from nspawnvm.rootfs import shared_caches


def test_nspawn_command(machine) -> None:
    cmd = nspawn_command(machine)
    assert cmd[0] == "systemd-nspawn"
    assert cmd[cmd.index("-D") + 1] == str(machine.rootfs)
    assert cmd[cmd.index("-M") + 1] == "lvtest"
    for flag in ("-b", "--register=no", "--keep-unit", "--network-veth"):
        assert flag in cmd
    assert is_nspawn_for(cmd, machine.rootfs)


def test_nspawn_command_on_a_bridge(machine) -> None:
    cmd = nspawn_command(replace(machine, bridge="br-lab", index=2))
    assert "--network-bridge=br-lab" in cmd
    assert "--network-veth" not in cmd
    assert cmd[cmd.index("-M") + 1] == "lvtest"  # the container still sees host0
    assert is_nspawn_for(cmd, machine.rootfs)


def test_nspawn_command_mounts_the_shared_caches(machine, tmp_path) -> None:
    cmd = nspawn_command(machine, [(tmp_path / "trixie-pip", "/root/.cache/pip")])
    assert f"--bind={tmp_path}/trixie-pip:/root/.cache/pip" in cmd
    assert is_nspawn_for(cmd, machine.rootfs)


def test_the_shared_pip_cache_is_one_per_release(tmp_path) -> None:
    assert shared_caches(tmp_path, "trixie") == [(tmp_path / "trixie-pip", "/root/.cache/pip")]
    assert shared_caches(tmp_path, "bookworm") == [(tmp_path / "bookworm-pip", "/root/.cache/pip")]
    assert (tmp_path / "trixie-pip").is_dir() and (tmp_path / "bookworm-pip").is_dir()


def test_is_nspawn_for_rejects_other_machines_and_programs(machine) -> None:
    rootfs = str(machine.rootfs)
    assert is_nspawn_for(["/usr/bin/systemd-nspawn", f"--directory={rootfs}"], machine.rootfs)
    assert not is_nspawn_for(["systemd-nspawn", "-D", rootfs + "2"], machine.rootfs)
    assert not is_nspawn_for(["systemd-nspawn", "-D", "root", "-M", "lvtest"], machine.rootfs)
    assert not is_nspawn_for(["vim", "-D", rootfs], machine.rootfs)
    assert not is_nspawn_for([], machine.rootfs)


def test_parse_children_and_nspid() -> None:
    assert parse_children("1687 1702 \n") == [1687, 1702]
    assert parse_children("") == []
    status = "Name:\tsystemd\nTgid:\t3739\nNSpid:\t3739\t1\nNSsid:\t3739\t1\n"
    assert parse_nspid(status) == [3739, 1]
    assert parse_nspid("Name:\tbash\n") == []


@pytest.mark.parametrize(
    ("nspid", "expected"), [([3739, 1], True), ([3800, 17], False), ([1], False), ([], False)]
)
def test_is_namespace_init(nspid: list[int], expected: bool) -> None:
    assert is_namespace_init(nspid) is expected
