"""Unit tests for nspawnvm.config: names, subnets, addresses, file locations and the state file."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from nspawnvm.config import (
    DEFAULT_SUBNET,
    Machine,
    VMState,
    derive_addresses,
    parse_subnet,
    read_state,
    validate_name,
    write_state,
)
from nspawnvm.errors import LocalVMError

# --- names and subnets -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["flaskvm", "a", "lvtest", "web-1", "abcdefghijk"])
def test_valid_names_are_accepted(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "1vm", "Flask", "a_b", "a.b", "-ab", "abcdefghijkl", "vm ", "vm/x", "../x"]
)
def test_invalid_names_are_rejected(name: str) -> None:
    with pytest.raises(LocalVMError, match="invalid VM name"):
        validate_name(name)


def test_longest_name_keeps_interface_within_kernel_limit() -> None:
    machine = Machine(validate_name("abcdefghijk"), IPv4Network("10.231.0.0/24"))
    assert len(machine.iface) <= 15


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.231.7.1/24", "host bits set"),
        ("10.231.7.0/31", "too small"),
        ("8.8.8.0/24", "private"),
        ("127.0.0.0/24", "private"),
        ("169.254.1.0/24", "private"),
        ("banana", "invalid subnet"),
        ("10.231.7.0/33", "invalid subnet"),
    ],
)
def test_bad_subnets_are_rejected(text: str, message: str) -> None:
    with pytest.raises(LocalVMError, match=message):
        parse_subnet(text)


def test_default_subnet_is_accepted() -> None:
    assert parse_subnet(DEFAULT_SUBNET) == IPv4Network("10.231.0.0/24")


@pytest.mark.parametrize(
    ("subnet", "host", "vm"),
    [
        ("10.231.7.0/24", "10.231.7.1", "10.231.7.2"),
        ("10.231.0.0/16", "10.231.0.1", "10.231.0.2"),
        ("192.168.5.4/30", "192.168.5.5", "192.168.5.6"),
    ],
)
def test_addresses_are_first_and_second_host(subnet: str, host: str, vm: str) -> None:
    assert derive_addresses(IPv4Network(subnet)) == (IPv4Address(host), IPv4Address(vm))


def test_machine_paths_and_names(machine, tmp_path: Path) -> None:
    assert machine.iface == "ve-lvtest"
    assert machine.nat_comment == "localvm:lvtest"
    assert machine.host_address == IPv4Address("10.231.7.1")
    assert machine.vm_address == IPv4Address("10.231.7.2")
    assert machine.rootfs == tmp_path / "lvtest" / "rootfs"
    assert machine.state_file == tmp_path / "lvtest" / "state.json"
    assert machine.ssh_config == tmp_path / "lvtest" / "ssh_config"
    assert machine.known_hosts.parent == machine.key.parent == machine.dir


# --- state ------------------------------------------------------------------------------------


def test_state_round_trip(make_state, machine) -> None:
    machine.dir.mkdir(parents=True)
    state = make_state()
    write_state(machine.state_file, state)
    assert read_state(machine.state_file) == state
    assert json.loads(machine.state_file.read_text())["nspawn_pid"] == 1685
    assert list(machine.dir.iterdir()) == [machine.state_file]  # no temp file left


def test_missing_state_is_none(machine) -> None:
    assert read_state(machine.state_file) is None


@pytest.mark.parametrize(
    "text", ["{not json", "[]", '{"name": "lvtest"}', json.dumps({"nspawn_pid": "x"})]
)
def test_corrupt_state_is_ignored(machine, text: str) -> None:
    machine.dir.mkdir(parents=True)
    machine.state_file.write_text(text)
    assert read_state(machine.state_file) is None


def test_state_with_wrong_types_is_rejected(make_state) -> None:
    data = json.loads(make_state().to_json())
    data["nspawn_pid"] = "1685"
    with pytest.raises(LocalVMError):
        VMState.from_json(json.dumps(data))
