"""Unit tests for nspawnvm.network: subnet collisions, the NAT rule and the ip_forward decision."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest

from nspawnvm import network
from nspawnvm.config import Machine
from nspawnvm.network import (
    bridge_comment,
    bridge_is_ours,
    bridge_mac,
    bridge_peer_problems,
    iptables_nat,
    keep_networkd_off,
    nat_rule_spec,
    parse_resolvers,
    parse_routes,
    release_networkd,
    render_networkd_unmanaged,
    rules_with_comment,
    should_disable_forwarding,
    subnet_conflicts,
)

# `ip -4 route show table all` as seen on a host running two localvm VMs.
IP_ROUTES = """\
default via 192.0.2.1 dev eth0
10.231.7.0/24 dev ve-lvtest proto kernel scope link src 10.231.7.1
10.231.9.0/24 dev ve-devvm proto kernel scope link src 10.231.9.1
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2
unreachable 172.16.0.0/12
local 10.231.7.1 dev ve-lvtest table local proto kernel scope host src 10.231.7.1
broadcast 10.231.7.255 dev ve-lvtest table local proto kernel scope link src 10.231.7.1
local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1
local 192.0.2.2 dev eth0 table local proto kernel scope host src 192.0.2.2
"""

# `iptables -t nat -S POSTROUTING`: iptables quotes comments containing a colon.
IPTABLES_S = """\
-P POSTROUTING ACCEPT
-A POSTROUTING -s 10.231.9.0/24 -m comment --comment devvm-manual -j MASQUERADE
-A POSTROUTING -s 10.231.7.0/24 ! -o ve-lvtest -m comment --comment "localvm:lvtest" -j MASQUERADE
-A POSTROUTING -s 10.231.8.0/24 ! -o ve-lvtest2 -m comment --comment "localvm:lvtest2" -j MASQUERADE
-A POSTROUTING -s 10.231.5.0/24 ! -o ve-lvtest -m comment --comment "localvm:lvtest" -j MASQUERADE
-A POSTROUTING -s 10.231.6.0/24 ! -o br-hx -m comment --comment "localvm:bridge:br-hx" -j MASQUERADE
"""
# A lab of two VMs on br-lab beside the routes above.
LAB_ROUTES = """\
10.231.6.0/24 dev br-lab proto kernel scope link src 10.231.6.1
local 10.231.6.1 dev br-lab table local proto kernel scope host src 10.231.6.1
broadcast 10.231.6.255 dev br-lab table local proto kernel scope link src 10.231.6.1
"""


# --- collisions --------------------------------------------------------------------------------


def test_parse_routes_skips_default_and_reads_types_and_devices() -> None:
    routes = parse_routes(IP_ROUTES)
    assert (IPv4Network("10.231.9.0/24"), "ve-devvm") in routes
    assert (IPv4Network("172.16.0.0/12"), None) in routes
    assert (IPv4Network("10.231.7.1/32"), "ve-lvtest") in routes
    assert all(dest != IPv4Network("0.0.0.0/0") for dest, _ in routes)


def test_no_conflict_for_a_free_subnet() -> None:
    routes = parse_routes(IP_ROUTES)
    resolvers = [IPv4Address("10.255.255.53")]
    assert subnet_conflicts(IPv4Network("10.231.3.0/24"), routes, resolvers, "ve-x") == []


def test_own_interface_routes_are_not_conflicts() -> None:
    routes = parse_routes(IP_ROUTES)
    assert subnet_conflicts(IPv4Network("10.231.7.0/24"), routes, [], "ve-lvtest") == []


def test_own_bridge_routes_are_not_conflicts() -> None:
    routes = parse_routes(IP_ROUTES + LAB_ROUTES)
    lab3 = Machine("lab3", IPv4Network("10.231.6.0/24"), bridge="br-lab", index=3)
    assert subnet_conflicts(lab3.subnet, routes, [], lab3.host_iface) == []
    # The same subnet on another bridge or a veth collides with the lab.
    problems = subnet_conflicts(lab3.subnet, routes, [], "br-other")
    assert problems == ["route 10.231.6.0/24 dev br-lab"]


def test_another_vms_subnet_is_a_conflict() -> None:
    routes = parse_routes(IP_ROUTES)
    problems = subnet_conflicts(IPv4Network("10.231.9.0/24"), routes, [], "ve-lvtest")
    assert problems == ["route 10.231.9.0/24 dev ve-devvm"]  # its local /32s are not repeated


def test_overlap_with_a_larger_or_smaller_route_is_a_conflict() -> None:
    routes = parse_routes(IP_ROUTES)
    assert subnet_conflicts(IPv4Network("172.20.0.0/24"), routes, [], "ve-x") == [
        "route 172.16.0.0/12"
    ]
    wide = subnet_conflicts(IPv4Network("10.231.0.0/16"), routes, [], "ve-lvtest")
    assert wide == ["route 10.231.9.0/24 dev ve-devvm"]


def test_host_address_routes_are_reported_when_not_covered() -> None:
    # The local-table /32 of eth0's address is covered by eth0's /24; an address on another
    # device is not.
    routes = parse_routes(IP_ROUTES + "local 192.0.2.77 dev dummy0 table local\n")
    problems = subnet_conflicts(IPv4Network("192.0.2.0/24"), routes, [], "ve-x")
    assert problems == ["route 192.0.2.0/24 dev eth0", "route 192.0.2.77/32 dev dummy0"]


def test_resolver_inside_subnet_is_a_conflict() -> None:
    resolvers = parse_resolvers(
        "# generated\nsearch example\nnameserver 10.255.255.53\nnameserver fd00::53\n"
        "nameserver bogus\n#nameserver 10.9.9.9\n"
    )
    assert resolvers == [IPv4Address("10.255.255.53")]
    problems = subnet_conflicts(IPv4Network("10.255.255.0/24"), [], resolvers, "ve-x")
    assert problems == ["DNS resolver 10.255.255.53"]


# --- ip_forward -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forwarding_was", "marker", "others", "expected"),
    [
        ("0", False, False, True),  # we turned it on, we are the last one
        ("0", True, True, False),  # another VM still needs it
        ("1", False, False, False),  # it was on before localvm: leave it
        ("1", True, False, True),  # another localvm VM turned it on before us and is gone
        ("1", True, True, False),
    ],
)
def test_forwarding_restore_decision(
    make_state, forwarding_was: str, marker: bool, others: bool, expected: bool
) -> None:
    state = make_state(forwarding_was=forwarding_was)
    assert should_disable_forwarding(state, marker, others) is expected


def test_forwarding_restored_without_state_only_with_marker() -> None:
    assert should_disable_forwarding(None, True, False)
    assert not should_disable_forwarding(None, False, False)


# --- iptables --------------------------------------------------------------------------------


def test_nat_rule_spec(machine) -> None:
    spec = nat_rule_spec(machine)
    assert iptables_nat("-C", spec) == [
        "iptables", "-w", "5", "-t", "nat", "-C", "POSTROUTING", "-s", "10.231.7.0/24",
        "!", "-o", "ve-lvtest", "-m", "comment", "--comment", "localvm:lvtest",
        "-j", "MASQUERADE",
    ]  # fmt: skip


def test_rules_with_comment_finds_exactly_ours(machine) -> None:
    found = rules_with_comment(IPTABLES_S, "localvm:lvtest")
    assert [spec[spec.index("-s") + 1] for spec in found] == ["10.231.7.0/24", "10.231.5.0/24"]
    # What -S lists must be what -D accepts: the same spec as the one we add.
    assert found[0] == nat_rule_spec(machine)


def test_rules_with_comment_ignores_other_rules() -> None:
    assert rules_with_comment(IPTABLES_S, "localvm:devvm") == []
    assert rules_with_comment("-P POSTROUTING ACCEPT\n", "localvm:lvtest") == []


def test_nat_rule_spec_for_a_bridge_is_the_bridges(machine) -> None:
    lab2 = replace(machine, name="lab2", bridge="br-lab", index=2)
    lab3 = replace(machine, name="lab3", bridge="br-lab", index=3)
    spec = nat_rule_spec(lab2)
    assert spec == [
        "POSTROUTING", "-s", "10.231.7.0/24", "!", "-o", "br-lab",
        "-m", "comment", "--comment", "localvm:bridge:br-lab", "-j", "MASQUERADE",
    ]  # fmt: skip
    assert nat_rule_spec(lab3) == spec  # one rule for all the VMs of the bridge
    assert bridge_comment("br-lab") == "localvm:bridge:br-lab"


def test_rules_with_comment_finds_the_bridge_rule() -> None:
    found = rules_with_comment(IPTABLES_S, bridge_comment("br-hx"))
    hx1 = Machine("hx1", IPv4Network("10.231.6.0/24"), bridge="br-hx")
    assert found == [nat_rule_spec(hx1)]
    # Exactly the bridge's comment: not a VM's own, nor another bridge's sharing a prefix.
    assert rules_with_comment(IPTABLES_S, "localvm:br-hx") == []
    assert rules_with_comment(IPTABLES_S, bridge_comment("br-h")) == []


# --- bridges ----------------------------------------------------------------------------------


def test_bridge_mac_is_stable_local_unicast() -> None:
    mac = bridge_mac("br-lab")
    assert mac == bridge_mac("br-lab")
    assert mac != bridge_mac("br-lab2")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01  # locally administered, unicast
    assert len(mac.split(":")) == 6


def test_only_a_bridge_tagged_by_localvm_is_ours() -> None:
    assert bridge_is_ours("localvm:bridge:br-lab\n", "br-lab")
    assert not bridge_is_ours("localvm:bridge:br-lab\n", "br-lab2")
    assert not bridge_is_ours("\n", "br-lab")
    assert not bridge_is_ours(None, "br-lab")


def test_bridge_peer_problems(make_state) -> None:
    lab3 = Machine("lab3", IPv4Network("10.231.6.0/24"), bridge="br-lab", index=3)
    lab1 = make_state(name="lab1", subnet="10.231.6.0/24", vm_address="10.231.6.2", index=1)
    assert bridge_peer_problems(lab3, [lab1]) == []
    clash = make_state(name="lab9", subnet="10.231.6.0/24", vm_address="10.231.6.4", index=3)
    assert bridge_peer_problems(lab3, [lab1, clash]) == [
        "lab9 runs there with the same address 10.231.6.4"
    ]
    elsewhere = make_state(name="old1", subnet="10.231.9.0/24", vm_address="10.231.9.4")
    assert bridge_peer_problems(lab3, [elsewhere]) == ["old1 runs there on 10.231.9.0/24"]


# --- systemd-networkd on the host ------------------------------------------------------------


def test_networkd_is_kept_off_the_vms_links(machine) -> None:
    assert render_networkd_unmanaged(machine) == (
        "[Match]\nName=ve-lvtest\n\n[Link]\nUnmanaged=yes\n"
    )
    lab2 = replace(machine, name="lab2", bridge="br-lab", index=2)
    assert "Name=vb-lab2 br-lab\n" in render_networkd_unmanaged(lab2)


@pytest.fixture
def networkd(monkeypatch, tmp_path):
    """A host whose networkd runs (or not), its runtime folder in tmp_path, commands recorded."""
    commands: list[list[str]] = []
    monkeypatch.setattr(network, "NETWORKD_RUNTIME", tmp_path / "network")
    monkeypatch.setattr(network, "run", lambda cmd, **_: commands.append(list(cmd)))
    monkeypatch.setattr(network, "networkd_runs", lambda: True)
    return commands


def test_a_running_networkd_is_told_before_the_boot_and_released_after(machine, networkd):
    keep_networkd_off(machine)
    (written,) = (network.NETWORKD_RUNTIME).iterdir()
    # Sorted before systemd's 80-container-ve.network: networkd applies the first match.
    assert written.name == "10-localvm-lvtest.network" < "80-container-ve.network"
    assert networkd == [["networkctl", "reload"]]
    release_networkd(machine)
    assert list(network.NETWORKD_RUNTIME.iterdir()) == []
    assert networkd == [["networkctl", "reload"]] * 2
    release_networkd(machine)  # again: nothing left, nothing to reload
    assert len(networkd) == 2


def test_no_networkd_no_file(machine, networkd, monkeypatch):
    monkeypatch.setattr(network, "networkd_runs", lambda: False)
    keep_networkd_off(machine)
    assert not network.NETWORKD_RUNTIME.exists()
    assert networkd == []
