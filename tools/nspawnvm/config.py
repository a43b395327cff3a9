"""What identifies one VM: its name, subnet, optional bridge and index on it, the addresses
derived from them, the paths of its files under /var/lib/localvm/NAME (Machine), and the state
file recording what `up` set up on the host (VMState).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, fields
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from .errors import LocalVMError, say

DEFAULT_NAME = "flaskvm"
DEFAULT_SUBNET = "10.231.0.0/24"
STATE_ROOT = Path("/var/lib/localvm")
LOCK_ROOT = Path("/run/localvm")
# nspawn derives the host interface name ve-NAME from the machine name and truncates it to the
# kernel's 15 characters: a short name keeps the interface name predictable.
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,10}$")
BRIDGE_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}$")


def validated(name: str, pattern: re.Pattern[str], what: str, rule: str) -> str:
    """name itself if it matches pattern; otherwise an error saying what it must be."""
    if not pattern.fullmatch(name):
        raise LocalVMError(f"invalid {what} {name!r}: {rule}")
    return name


def validate_name(name: str) -> str:
    return validated(
        name, NAME_RE, "VM name", "use 1-11 characters, a-z, 0-9 and '-', starting with a letter"
        " (the host interface ve-NAME must fit in 15 characters)",
    )  # fmt: skip


def validate_bridge(name: str) -> str:
    return validated(
        name, BRIDGE_RE, "bridge name", "use 1-15 characters, a-z, 0-9 and '-', starting with a"
        " letter (the kernel's limit for an interface name)",
    )  # fmt: skip


def parse_subnet(text: str) -> IPv4Network:
    try:
        subnet = IPv4Network(text, strict=True)
    except ValueError as exc:
        raise LocalVMError(f"invalid subnet {text!r}: {exc}") from None
    if subnet.prefixlen > 30:
        raise LocalVMError(
            f"subnet {subnet} is too small: it needs room for two hosts (/30 or larger)"
        )
    if not subnet.is_private or subnet.is_loopback or subnet.is_link_local:
        raise LocalVMError(f"subnet {subnet} must be a private range such as {DEFAULT_SUBNET}")
    return subnet


def max_index(subnet: IPv4Network) -> int:
    """The highest VM index: every host address but the host side's."""
    return subnet.num_addresses - 2 - 1


def validate_index(index: int, subnet: IPv4Network) -> int:
    if not 1 <= index <= max_index(subnet):
        raise LocalVMError(
            f"invalid VM index {index} for subnet {subnet}: use 1 to {max_index(subnet)} "
            "(VM k gets the subnet's address .k+1, the host side keeps .1)"
        )
    return index


def derive_addresses(subnet: IPv4Network, index: int = 1) -> tuple[IPv4Address, IPv4Address]:
    """The host side takes the first host address of the subnet, the VM of index k the (k+1)th:
    VMs sharing a bridge (and so a subnet) each get their own address."""
    validate_index(index, subnet)
    return subnet.network_address + 1, subnet.network_address + 1 + index


@dataclass(frozen=True)
class Machine:
    name: str
    subnet: IPv4Network
    state_root: Path = STATE_ROOT
    # On a bridge, several VMs share the subnet: index k gives the VM the address .k+1.
    bridge: str | None = None
    index: int = 1

    def __post_init__(self) -> None:
        validate_index(self.index, self.subnet)

    @property
    def host_address(self) -> IPv4Address:
        return derive_addresses(self.subnet, self.index)[0]

    @property
    def vm_address(self) -> IPv4Address:
        return derive_addresses(self.subnet, self.index)[1]

    @property
    def iface(self) -> str:
        """The host end of the VM's veth, named by nspawn (vb- when it joins a bridge)."""
        return f"{'vb' if self.bridge else 've'}-{self.name}"

    @property
    def host_iface(self) -> str:
        """Where the host address lives and what the NAT rule leaves alone: bridge or veth."""
        return self.bridge or self.iface

    @property
    def nat_comment(self) -> str:
        """The VM's own tag: its NAT rule when it has a veth of its own, its SSH key."""
        return f"localvm:{self.name}"

    @property
    def dir(self) -> Path:
        return self.state_root / self.name

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"


@dataclass
class VMState:
    name: str
    nspawn_pid: int
    container_pid1: int | None
    subnet: str
    host_address: str
    vm_address: str
    iface: str
    forwarding_was: str
    nat_rule: list[str]
    started_at: float
    # Absent from the state files of older versions: a veth VM of index 1.
    bridge: str | None = None
    index: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> VMState:
        try:
            data = json.loads(text)
            state = cls(
                **{
                    f.name: data[f.name] if f.default is MISSING else data.get(f.name, f.default)
                    for f in fields(cls)
                }
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise LocalVMError(f"unreadable state: {exc!r}") from None
        if (
            not isinstance(state.nspawn_pid, int)
            or not isinstance(state.nat_rule, list)
            or not isinstance(state.bridge, str | None)
            or not isinstance(state.index, int)
        ):
            raise LocalVMError("unreadable state: wrong field types")
        return state


def write_state(path: Path, state: VMState) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.to_json())
    os.replace(tmp, path)


def read_state(path: Path) -> VMState | None:
    """The recorded state, or None if there is none; a corrupt file is reported and ignored."""
    try:
        return VMState.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except LocalVMError as exc:
        say(f"ignoring {path}: {exc}")
        return None


def running_peers(
    name: str | None, bridge: str, recorded: Iterable[tuple[VMState, bool]]
) -> list[VMState]:
    """The VMs other than `name` on `bridge` that still run, from every recorded VM and whether
    it runs.

    While there is one, the bridge and its NAT rule stay; a state file that outlived its VM
    does not count.
    """
    return [
        state
        for state, running in recorded
        if running and state.bridge == bridge and state.name != name
    ]
