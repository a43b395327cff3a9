"""A lab: VMs LAB1..LABN on one bridge br-LAB and one subnet, VM k at the subnet's address .k+1.

Each VM is an ordinary VM with a bridge and an index, handled by the per-VM commands under its
own lock; the lab only names them, finds the existing ones, and removes the bridge at the end.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from ipaddress import IPv4Network
from pathlib import Path

from .commands import bring_up, cmd_destroy, cmd_stop, machine_status, vm_lock
from .config import STATE_ROOT, Machine, max_index, validate_name, validated
from .errors import LocalVMError, say
from .network import release_bridge
from .processes import vm_running

DEFAULT_LAB = "lab"
DEFAULT_LAB_SUBNET = "10.231.2.0/24"
# 10 characters leave one for the index within the 11 of a VM name; no final digit, so that the
# VMs of lab "web" (web1, web12) are never those of lab "web1".
LAB_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,8}[a-z-])?$")


def validate_lab_name(name: str) -> str:
    return validated(
        name, LAB_RE, "lab name", "use 1-10 characters, a-z, 0-9 and '-', starting with a letter"
        " and not ending with a digit (its VMs are NAME1, NAME2, ...)",
    )  # fmt: skip


def lab_bridge(lab: str) -> str:
    return f"br-{lab}"


def lab_machine(
    lab: str, index: int, subnet: IPv4Network, state_root: Path = STATE_ROOT
) -> Machine:
    name = f"{lab}{index}"
    if len(name) > 11:
        raise LocalVMError(
            f"lab {lab!r} cannot have a VM {index}: its name {name!r} is longer than 11 "
            "characters (use a shorter lab name)"
        )
    return Machine(validate_name(name), subnet, state_root, bridge=lab_bridge(lab), index=index)


def lab_machines(
    lab: str, subnet: IPv4Network, indices: Iterable[int], state_root: Path = STATE_ROOT
) -> list[Machine]:
    return [lab_machine(lab, index, subnet, state_root) for index in indices]


def check_count(count: int, subnet: IPv4Network) -> int:
    if not 1 <= count <= max_index(subnet):
        raise LocalVMError(f"--count must be 1 to {max_index(subnet)} on {subnet}, not {count}")
    return count


def member_indices(lab: str, names: Iterable[str]) -> list[int]:
    """The indices of the lab's VMs among directory names: LAB1, LAB2, ... (no LAB01)."""
    pattern = re.compile(rf"^{re.escape(lab)}([1-9][0-9]*)$")
    return sorted(int(m.group(1)) for m in map(pattern.fullmatch, names) if m)


def existing_indices(lab: str, state_root: Path) -> list[int]:
    names = [entry.name for entry in state_root.iterdir()] if state_root.is_dir() else []
    return member_indices(lab, names)


def summary_line(machine: Machine) -> str:
    ssh = f"ssh -F {machine.ssh_config} {machine.name}"
    return f"{machine.name:<11}  {machine.vm_address!s:<15}  {ssh}"


def status_line(machine: Machine, status: str) -> str:
    return f"{machine.name:<11}  {status:<7}  {machine.vm_address}"


def lab_up(lab: str, subnet: IPv4Network, args: argparse.Namespace) -> int:
    machines = lab_machines(lab, subnet, range(1, check_count(args.count, subnet) + 1))
    # One after the other: each takes its own lock, and the first one makes the bridge.
    for machine in machines:
        with vm_lock(machine):
            bring_up(machine, args)
    say(f"lab {lab} is up: {len(machines)} VM(s) on bridge {lab_bridge(lab)}, {subnet}")
    for machine in machines:
        print(summary_line(machine))
    return 0


def lab_down(
    lab: str, subnet: IPv4Network, args: argparse.Namespace, state_root: Path = STATE_ROOT
) -> int:
    """stop or destroy every VM of the lab that exists, whatever --count once was."""
    handler = cmd_destroy if args.lab_command == "destroy" else cmd_stop
    machines = lab_machines(lab, subnet, existing_indices(lab, state_root), state_root)
    if not machines:
        say(f"lab {lab} has no VMs under {state_root}")
    for machine in machines:
        with vm_lock(machine):
            handler(machine, args)
    # The last VM's teardown removed the bridge; this also covers one left by VMs whose
    # directories are gone.
    release_bridge(lab_bridge(lab), None, state_root)
    return 0


def lab_status(
    lab: str, subnet: IPv4Network, args: argparse.Namespace, state_root: Path = STATE_ROOT
) -> int:
    """Every existing VM of the lab, and with --count the ones up to it (absent if missing)."""
    wanted = range(1, (args.count or 0) + 1)
    indices = sorted(set(existing_indices(lab, state_root)) | set(wanted))
    if not indices:
        say(f"lab {lab} has no VMs under {state_root}")
        return 1
    statuses = []
    for machine in lab_machines(lab, subnet, indices, state_root):
        statuses.append(machine_status(vm_running(machine), machine.rootfs.exists()))
        print(status_line(machine, statuses[-1]))
    return 0 if all(status == "running" for status in statuses) else 1


LAB_COMMANDS = {"up": lab_up, "stop": lab_down, "destroy": lab_down, "status": lab_status}


def cmd_lab(lab: str, subnet: IPv4Network, args: argparse.Namespace) -> int:
    return LAB_COMMANDS[args.lab_command](validate_lab_name(lab), subnet, args)
