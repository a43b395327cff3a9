"""What identifies one VM: its name and subnet, the addresses derived from the subnet, the
paths of its files under /var/lib/localvm/NAME (Machine), and the state file recording what
`up` set up on the host (VMState).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, fields
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


def validate_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise LocalVMError(
            f"invalid VM name {name!r}: use 1-11 characters, a-z, 0-9 and '-', "
            "starting with a letter (the host interface ve-NAME must fit in 15 characters)"
        )
    return name


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


def derive_addresses(subnet: IPv4Network) -> tuple[IPv4Address, IPv4Address]:
    """The host side takes the first host address of the subnet, the VM the second."""
    return subnet.network_address + 1, subnet.network_address + 2


@dataclass(frozen=True)
class Machine:
    name: str
    subnet: IPv4Network
    state_root: Path = STATE_ROOT

    @property
    def host_address(self) -> IPv4Address:
        return derive_addresses(self.subnet)[0]

    @property
    def vm_address(self) -> IPv4Address:
        return derive_addresses(self.subnet)[1]

    @property
    def iface(self) -> str:
        return f"ve-{self.name}"

    @property
    def nat_comment(self) -> str:
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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> VMState:
        try:
            data = json.loads(text)
            state = cls(**{f.name: data[f.name] for f in fields(cls)})
        except (ValueError, KeyError, TypeError) as exc:
            raise LocalVMError(f"unreadable state: {exc!r}") from None
        if not isinstance(state.nspawn_pid, int) or not isinstance(state.nat_rule, list):
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
