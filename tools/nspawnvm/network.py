"""The host side of the VM's network: checking that the subnet collides with no host route
or resolver, the host address on the veth ve-NAME or on the bridge the VM joins, the NAT rule
(found by its comment: localvm:NAME, or localvm:bridge:BRIDGE shared by the VMs of a bridge),
net.ipv4.ip_forward, turned off again only by whoever turned it on, and on a host whose
systemd-networkd runs, a runtime file that keeps it off the VM's links.
"""

from __future__ import annotations

import contextlib
import hashlib
import shlex
import shutil
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from .config import LOCK_ROOT, Machine, VMState, running_peers
from .errors import LocalVMError, say
from .host import file_lock, run
from .processes import other_vms_running, recorded_vms

ROUTE_TYPES = frozenset(
    {"unicast", "local", "broadcast", "multicast", "throw", "unreachable", "prohibit", "blackhole"}
    | {"nat", "anycast"}
)
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
NETWORKD_RUNTIME = Path("/run/systemd/network")


def parse_routes(text: str) -> list[tuple[IPv4Network, str | None]]:
    """(destination, device) pairs from `ip -4 route show table all`; default routes skipped."""
    routes = []
    for line in text.splitlines():
        tokens = line.split()
        if tokens and tokens[0] in ROUTE_TYPES:
            tokens = tokens[1:]
        if not tokens or tokens[0] == "default":
            continue
        try:
            dest = IPv4Network(tokens[0], strict=False)
        except ValueError:
            continue
        dev = tokens[tokens.index("dev") + 1] if "dev" in tokens[:-1] else None
        routes.append((dest, dev))
    return routes


def parse_resolvers(text: str) -> list[IPv4Address]:
    resolvers = []
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) >= 2 and tokens[0] == "nameserver":
            with contextlib.suppress(ValueError):
                resolvers.append(IPv4Address(tokens[1]))
    return resolvers


def subnet_conflicts(
    subnet: IPv4Network,
    routes: Sequence[tuple[IPv4Network, str | None]],
    resolvers: Sequence[IPv4Address],
    own_iface: str,
) -> list[str]:
    """Why `subnet` would shadow part of the host's network (our own ve-NAME or bridge excepted:
    a lab's bridge carries the subnet while its first VMs run)."""
    reported: list[tuple[IPv4Network, str | None]] = []
    # Widest first, so that the local-table /32s of an interface already named are not repeated.
    for dest, dev in sorted(routes, key=lambda route: route[0].prefixlen):
        if dev == own_iface or not dest.overlaps(subnet):
            continue
        if not any(dev == seen_dev and dest.subnet_of(seen) for seen, seen_dev in reported):
            reported.append((dest, dev))
    problems = [f"route {dest}" + (f" dev {dev}" if dev else "") for dest, dev in reported]
    problems += [f"DNS resolver {addr}" for addr in resolvers if addr in subnet]
    return problems


def check_subnet_free(machine: Machine) -> None:
    routes = parse_routes(run(["ip", "-4", "route", "show", "table", "all"]).stdout)
    try:
        resolv = Path("/etc/resolv.conf").read_text()
    except OSError:
        resolv = ""
    problems = subnet_conflicts(machine.subnet, routes, parse_resolvers(resolv), machine.host_iface)
    if problems:
        raise LocalVMError(
            f"subnet {machine.subnet} collides with the host's network ({'; '.join(problems)}): "
            "pick another one with --subnet or LOCALVM_SUBNET"
        )


def link_exists(iface: str) -> bool:
    return Path("/sys/class/net", iface).exists()


def bridge_comment(bridge: str) -> str:
    """Tags the bridge's NAT rule and the bridge itself (its alias): what localvm may remove."""
    return f"localvm:bridge:{bridge}"


def bridge_mac(bridge: str) -> str:
    """A fixed, locally administered MAC for the bridge, derived from its name.

    Without one the kernel gives the bridge the lowest MAC of its ports, which changes as VMs
    join and leave: the VMs' ARP entry for their gateway would go stale each time.
    """
    digest = hashlib.sha256(bridge.encode()).digest()
    return ":".join(f"{byte:02x}" for byte in (0x02, *digest[:5]))


def bridge_is_ours(alias: str | None, bridge: str) -> bool:
    return alias is not None and alias.strip() == bridge_comment(bridge)


def read_alias(iface: str) -> str | None:
    try:
        return Path("/sys/class/net", iface, "ifalias").read_text()
    except OSError:
        return None


@contextlib.contextmanager
def bridge_lock(bridge: str | None) -> Iterator[None]:
    """Serialise the VMs of one bridge while they set it up or decide to remove it."""
    if bridge is None:
        yield
        return
    with file_lock(LOCK_ROOT / "bridges" / f"{bridge}.lock", f"bridge {bridge}"):
        yield


def set_up_bridge(machine: Machine) -> None:
    """The bridge with the host address, made before nspawn, which only joins an existing one."""
    bridge = machine.bridge
    assert bridge is not None
    if not link_exists(bridge):
        say(f"creating bridge {bridge}")
        run(["ip", "link", "add", bridge, "address", bridge_mac(bridge), "type", "bridge"])
        run(["ip", "link", "set", bridge, "alias", bridge_comment(bridge)])
    elif not bridge_is_ours(read_alias(bridge), bridge):
        raise LocalVMError(
            f"interface {bridge} exists and was not made by localvm: pick another --bridge"
        )
    prefix = machine.subnet.prefixlen
    run(["ip", "addr", "replace", f"{machine.host_address}/{prefix}", "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])


def set_up_host_side(machine: Machine) -> None:
    if machine.bridge:
        set_up_bridge(machine)
        # nspawn put the veth on the bridge; this repairs it if the bridge was made anew since.
        if link_exists(machine.iface):
            run(["ip", "link", "set", machine.iface, "master", machine.bridge, "up"])
        return
    # The veth is recreated at each boot, so its host address is too.
    prefix = machine.subnet.prefixlen
    run(["ip", "addr", "replace", f"{machine.host_address}/{prefix}", "dev", machine.iface])
    run(["ip", "link", "set", machine.iface, "up"])


def render_networkd_unmanaged(machine: Machine) -> str:
    names = " ".join(filter(None, (machine.iface, machine.bridge)))
    return f"[Match]\nName={names}\n\n[Link]\nUnmanaged=yes\n"


def networkd_file(machine: Machine) -> Path:
    # Sorts before systemd's 80-container-ve.network: networkd applies the first match.
    return NETWORKD_RUNTIME / f"10-localvm-{machine.name}.network"


def networkd_runs() -> bool:
    if shutil.which("networkctl") is None:
        return False
    return (
        run(["systemctl", "is-active", "--quiet", "systemd-networkd"], check=False).returncode == 0
    )


def keep_networkd_off(machine: Machine) -> None:
    """A host's systemd-networkd configures container links by itself (Debian 13 marks ve-*
    for it: a DHCP server, link-local and pool addresses beside ours); this VM's links are left
    to us. Before the boot, so that networkd never takes the new link."""
    if not networkd_runs():
        return
    NETWORKD_RUNTIME.mkdir(parents=True, exist_ok=True)
    networkd_file(machine).write_text(render_networkd_unmanaged(machine))
    run(["networkctl", "reload"], check=False)


def release_networkd(machine: Machine) -> None:
    if networkd_file(machine).exists():
        networkd_file(machine).unlink()
        run(["networkctl", "reload"], check=False)


def bridge_peer_problems(machine: Machine, peers: Sequence[VMState]) -> list[str]:
    """Why `machine` cannot join its bridge beside the VMs running there."""
    problems = []
    for peer in peers:
        if peer.subnet != str(machine.subnet):
            problems.append(f"{peer.name} runs there on {peer.subnet}")
        elif peer.vm_address == str(machine.vm_address):
            problems.append(f"{peer.name} runs there with the same address {peer.vm_address}")
    return problems


def check_bridge_peers(machine: Machine) -> None:
    if machine.bridge is None:
        return
    peers = running_peers(machine.name, machine.bridge, recorded_vms(machine.state_root))
    problems = bridge_peer_problems(machine, peers)
    if problems:
        raise LocalVMError(
            f"{machine.name} cannot join bridge {machine.bridge} as {machine.vm_address} on "
            f"{machine.subnet}: {'; '.join(problems)}"
        )


def nat_rule_spec(machine: Machine) -> list[str]:
    """The VM's NAT rule, or its bridge's: one for all the VMs there, whose traffic between
    them stays on the bridge and keeps its addresses (`! -o`)."""
    comment = bridge_comment(machine.bridge) if machine.bridge else machine.nat_comment
    # fmt: off
    return [
        "POSTROUTING", "-s", str(machine.subnet), "!", "-o", machine.host_iface,
        "-m", "comment", "--comment", comment, "-j", "MASQUERADE",
    ]


def iptables_nat(action: str, spec: Sequence[str]) -> list[str]:
    # -w: wait for the xtables lock instead of failing when another tool holds it.
    return ["iptables", "-w", "5", "-t", "nat", action, *spec]


def rules_with_comment(iptables_s_output: str, comment: str) -> list[list[str]]:
    """Rule specs (for -D) carrying exactly our comment, from `iptables -t nat -S POSTROUTING`.

    Matching on the comment rather than the subnet also finds rules left from a run with
    another --subnet.
    """
    found = []
    for line in iptables_s_output.splitlines():
        tokens = shlex.split(line)
        if len(tokens) < 2 or tokens[0] != "-A":
            continue
        comments = [tokens[i + 1] for i, tok in enumerate(tokens[:-1]) if tok == "--comment"]
        if comment in comments:
            found.append(tokens[1:])
    return found


def ensure_nat_rule(machine: Machine) -> list[str]:
    spec = nat_rule_spec(machine)
    if run(iptables_nat("-C", spec), check=False).returncode != 0:
        run(iptables_nat("-A", spec))
    return spec


def remove_nat_rules(comment: str) -> None:
    listing = run(iptables_nat("-S", ["POSTROUTING"])).stdout
    for spec in rules_with_comment(listing, comment):
        say(f"removing NAT rule {shlex.join(spec)}")
        run(iptables_nat("-D", spec))


def should_disable_forwarding(
    state: VMState | None, marker_exists: bool, others_running: bool
) -> bool:
    """Turn ip_forward back off only if localvm turned it on and no other VM still needs it.

    The marker file survives across VMs: if VM a turned forwarding on and VM b came up after it,
    b saw "1", yet the last of them to go must still restore "0".
    """
    if others_running:
        return False
    return marker_exists or (state is not None and state.forwarding_was == "0")


def forwarding_marker(machine: Machine) -> Path:
    return machine.state_root / ".ip_forward-enabled-by-localvm"


def enable_forwarding(machine: Machine) -> str:
    was = IP_FORWARD.read_text().strip()
    if was != "1":
        say("enabling net.ipv4.ip_forward (restored when the last VM goes)")
        IP_FORWARD.write_text("1\n")
        forwarding_marker(machine).write_text(f"{machine.name}\n")
    return was


def restore_forwarding(machine: Machine, state: VMState | None) -> None:
    marker = forwarding_marker(machine)
    if should_disable_forwarding(state, marker.exists(), other_vms_running(machine)):
        say("restoring net.ipv4.ip_forward=0")
        IP_FORWARD.write_text("0\n")
        marker.unlink(missing_ok=True)


def remove_bridge(bridge: str) -> None:
    """The bridge's NAT rule and the bridge itself (if localvm made it): call it for the last
    VM there, under its bridge_lock."""
    remove_nat_rules(bridge_comment(bridge))
    if link_exists(bridge):
        if bridge_is_ours(read_alias(bridge), bridge):
            say(f"deleting bridge {bridge}")
            run(["ip", "link", "del", bridge])
        else:
            say(f"leaving {bridge} alone: localvm did not make it")


def release_bridge(bridge: str, leaving: str | None, state_root: Path) -> None:
    """Remove the bridge and its NAT rule unless a VM there other than `leaving` still runs."""
    with bridge_lock(bridge):
        if not running_peers(leaving, bridge, recorded_vms(state_root)):
            remove_bridge(bridge)


def clean_host_side(machine: Machine, state: VMState | None) -> None:
    """Undo what `up` did on the host; safe to repeat and safe after the VM died on its own.

    What the state file recorded wins over the options (`stop` of a VM on a bridge needs no
    --bridge); without one, the options tell.
    """
    remove_nat_rules(machine.nat_comment)
    bridge = state.bridge if state else machine.bridge
    if bridge:
        # The veth (vb-NAME) went with the container; the bridge goes with the last VM on it.
        release_bridge(bridge, machine.name, machine.state_root)
    elif link_exists(machine.iface):
        prefix = machine.subnet.prefixlen
        address = state.host_address if state else str(machine.host_address)
        if state:
            prefix = IPv4Network(state.subnet).prefixlen
        run(["ip", "addr", "del", f"{address}/{prefix}", "dev", machine.iface], check=False)
    restore_forwarding(machine, state)
    release_networkd(machine)
    machine.state_file.unlink(missing_ok=True)
