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
    max_index,
    parse_subnet,
    read_state,
    running_peers,
    validate_bridge,
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


@pytest.mark.parametrize(
    ("subnet", "index", "vm"),
    [
        ("10.231.6.0/24", 1, "10.231.6.2"),
        ("10.231.6.0/24", 2, "10.231.6.3"),
        ("10.231.6.0/24", 3, "10.231.6.4"),
        ("10.231.6.0/24", 253, "10.231.6.254"),  # the last host address
        ("10.231.0.0/16", 300, "10.231.1.45"),
        ("192.168.5.8/29", 5, "192.168.5.14"),
    ],
)
def test_vm_address_by_index_host_address_unchanged(subnet: str, index: int, vm: str) -> None:
    network = IPv4Network(subnet)
    assert derive_addresses(network, index) == (network.network_address + 1, IPv4Address(vm))
    machine = Machine("lab1", network, bridge="br-lab", index=index)
    assert (machine.host_address, machine.vm_address) == (
        network.network_address + 1,
        IPv4Address(vm),
    )


@pytest.mark.parametrize(
    ("subnet", "index"),
    [("10.231.6.0/24", 0), ("10.231.6.0/24", -1), ("10.231.6.0/24", 254), ("192.168.5.4/30", 2)],
)
def test_index_out_of_the_subnet_is_rejected(subnet: str, index: int) -> None:
    with pytest.raises(LocalVMError, match=f"invalid VM index {index} for subnet {subnet}"):
        Machine("lab1", IPv4Network(subnet), index=index)


def test_max_index_leaves_the_host_address() -> None:
    assert max_index(IPv4Network("10.231.6.0/24")) == 253
    assert max_index(IPv4Network("192.168.5.4/30")) == 1


@pytest.mark.parametrize("name", ["br-lab", "b", "br0", "abcdefghijklmno"])
def test_valid_bridge_names_are_accepted(name: str) -> None:
    assert validate_bridge(name) == name


@pytest.mark.parametrize(
    "name", ["", "0br", "Br-lab", "br_lab", "br.lab", "abcdefghijklmnop", "-b"]
)
def test_invalid_bridge_names_are_rejected(name: str) -> None:
    with pytest.raises(LocalVMError, match="invalid bridge name"):
        validate_bridge(name)


def test_bridged_machine_interfaces(tmp_path: Path) -> None:
    machine = Machine("lab2", IPv4Network("10.231.6.0/24"), tmp_path, bridge="br-lab", index=2)
    assert machine.iface == "vb-lab2"  # nspawn's name for the host end of a bridged veth
    assert machine.host_iface == "br-lab"
    assert machine.nat_comment == "localvm:lab2"
    assert len(Machine("abcdefghijk", machine.subnet, bridge="br-x").iface) <= 15


def test_machine_paths_and_names(machine, tmp_path: Path) -> None:
    assert machine.iface == machine.host_iface == "ve-lvtest"
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


def test_state_round_trip_with_bridge_and_index(make_state, machine) -> None:
    machine.dir.mkdir(parents=True)
    state = make_state(bridge="br-lab", index=3, vm_address="10.231.7.4", iface="vb-lvtest")
    write_state(machine.state_file, state)
    assert read_state(machine.state_file) == state
    assert json.loads(machine.state_file.read_text())["bridge"] == "br-lab"


def test_state_of_an_older_version_reads_as_a_veth_vm_of_index_1(make_state, machine) -> None:
    machine.dir.mkdir(parents=True)
    data = json.loads(make_state().to_json())
    del data["bridge"], data["index"]
    machine.state_file.write_text(json.dumps(data))
    state = read_state(machine.state_file)
    assert state == make_state()
    assert state is not None and (state.bridge, state.index) == (None, 1)


@pytest.mark.parametrize(("field", "value"), [("bridge", 5), ("index", "2"), ("index", None)])
def test_state_with_wrong_bridge_or_index_types_is_rejected(make_state, field, value) -> None:
    data = json.loads(make_state().to_json())
    data[field] = value
    with pytest.raises(LocalVMError, match="wrong field types"):
        VMState.from_json(json.dumps(data))


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


# --- VMs sharing a bridge -----------------------------------------------------------------------


def test_running_peers_decide_whether_the_bridge_stays(make_state) -> None:
    lab1 = make_state(name="lab1", bridge="br-lab", index=1)
    lab2 = make_state(name="lab2", bridge="br-lab", index=2)
    other = make_state(name="web1", bridge="br-web")
    plain = make_state(name="flaskvm")
    # lab1 leaves while lab2 runs: the bridge stays.
    assert running_peers("lab1", "br-lab", [(lab1, True), (lab2, True)]) == [lab2]
    # lab2's state file outlived it, and the other VMs are elsewhere: lab1 is the last one.
    recorded = [(lab1, True), (lab2, False), (other, True), (plain, True)]
    assert running_peers("lab1", "br-lab", recorded) == []
    # Without a VM leaving (lab destroy's final check) every running VM there counts.
    assert running_peers(None, "br-lab", [(lab1, True), (lab2, False)]) == [lab1]
    assert running_peers(None, "br-lab", []) == []
