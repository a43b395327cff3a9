"""The command line: options and their environment defaults, the VM they describe (completed
from its state file), dispatch to the subcommands under the per-VM lock or to the lab, and exit
statuses (1 for an error, 2 when this host cannot run the VM).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __doc__ as package_doc
from .commands import (
    cmd_address,
    cmd_destroy,
    cmd_ssh,
    cmd_ssh_config,
    cmd_status,
    cmd_stop,
    cmd_up,
    vm_lock,
)
from .config import (
    DEFAULT_NAME,
    DEFAULT_SUBNET,
    STATE_ROOT,
    Machine,
    VMState,
    parse_subnet,
    read_state,
    validate_bridge,
    validate_name,
)
from .errors import LocalVMError, PreconditionError
from .host import check_preconditions
from .lab import DEFAULT_LAB, DEFAULT_LAB_SUBNET, cmd_lab
from .rootfs import DEFAULT_CACHE, DEFAULT_MIRROR, DEFAULT_RELEASE, RELEASES, validate_release

COMMANDS = {
    "up": cmd_up,
    "stop": cmd_stop,
    "destroy": cmd_destroy,
    "status": cmd_status,
    "address": cmd_address,
    "ssh-config": cmd_ssh_config,
    "ssh": cmd_ssh,
}
NEEDS_NOTHING = frozenset({"address", "ssh-config"})
# Commands that change host state take the per-VM lock.
LOCKED = frozenset({"up", "stop", "destroy"})
LAB_HELPS = {
    "up": "create or start LAB1..LABN one after the other, print a line per VM",
    "stop": "stop every VM of the lab, then remove its bridge and NAT rule",
    "destroy": "destroy every VM of the lab, then remove its bridge and NAT rule",
    "status": "print each VM's status (exit 0 only if all run)",
}


def add_network_options(parser: argparse.ArgumentParser, per_vm: bool = True) -> None:
    """--name, --subnet and, but for the lab, --bridge and --index."""
    parser.add_argument(
        "--name",
        help=(
            f"VM name (env LOCALVM_NAME, default {DEFAULT_NAME}); "
            f"for lab, the lab's (env LOCALVM_LAB, default {DEFAULT_LAB})"
        ),
    )
    parser.add_argument(
        "--subnet",
        help=(
            f"VM subnet (env LOCALVM_SUBNET, default {DEFAULT_SUBNET}); "
            f"for lab, the lab's (env LOCALVM_LAB_SUBNET, default {DEFAULT_LAB_SUBNET})"
        ),
    )
    if not per_vm:
        return
    parser.add_argument(
        "--bridge", help="put the VM on this bridge (env LOCALVM_BRIDGE; default: a veth)"
    )
    parser.add_argument(
        "--index",
        type=int,
        help="VM k takes the subnet's address .k+1 (env LOCALVM_INDEX, default 1)",
    )


def env_index(parser: argparse.ArgumentParser, text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        parser.error(f"LOCALVM_INDEX must be an integer, not {text!r}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options; what neither an option nor the environment sets stays None for --bridge,
    --index and the per-VM --subnet (resolve_machine fills them in)."""
    env = os.environ
    common = argparse.ArgumentParser(add_help=False)
    add_network_options(common)
    # The same options after the command too, without overriding the ones given before it.
    late = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    add_network_options(late)
    late_lab = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    add_network_options(late_lab, per_vm=False)
    parser = argparse.ArgumentParser(
        prog="localvm.py", parents=[common], description=package_doc.split("\n\n")[0]
    )
    parser.set_defaults(
        cache=env.get("LOCALVM_CACHE", DEFAULT_CACHE),
        mirror=env.get("LOCALVM_MIRROR", DEFAULT_MIRROR),
    )
    parser.add_argument(
        "--release",
        default=env.get("LOCALVM_RELEASE") or None,
        help=(
            f"Debian release of a new VM: {', '.join(RELEASES)} (env LOCALVM_RELEASE; default: "
            f"the one an existing VM runs, else {DEFAULT_RELEASE})"
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        "up": "create or start the VM and wait until SSH works",
        "stop": "power the VM off, keeping its disk",
        "destroy": "stop the VM and delete it (the base image cache is kept)",
        "status": "print running/stopped/absent (exit 0 only if running)",
        "address": "print the VM's IPv4 address",
        "ssh-config": "print the path of the VM's ssh_config",
        "ssh": "ssh into the VM: ssh [-- CMD...]",
        "lab": "VMs LAB1..LABN on bridge br-LAB (--name LAB): up --count N, stop, destroy, status",
    }
    for command, text in helps.items():
        parents = [late_lab if command == "lab" else late]
        p = sub.add_parser(command, parents=parents, help=text, description=text)
        if command == "ssh":
            p.add_argument("remote", nargs=argparse.REMAINDER, help="command to run in the VM")
        if command == "lab":
            lab_sub = p.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND")
            for lab_command, lab_text in LAB_HELPS.items():
                lp = lab_sub.add_parser(
                    lab_command, parents=[late_lab], help=lab_text, description=lab_text
                )
                if lab_command == "up":
                    lp.add_argument("--count", type=int, required=True, help="number of VMs")
                if lab_command == "status":
                    lp.add_argument("--count", type=int, help="also report LAB1..LABN if missing")
    args = parser.parse_args(argv)
    if args.command == "lab":
        if args.bridge is not None or args.index is not None:
            parser.error("lab: the VMs' bridge (br-LAB) and indices (k for LABk) are fixed")
        args.name = args.name or env.get("LOCALVM_LAB") or DEFAULT_LAB
        args.subnet = args.subnet or env.get("LOCALVM_LAB_SUBNET") or DEFAULT_LAB_SUBNET
        return args
    args.name = args.name or env.get("LOCALVM_NAME") or DEFAULT_NAME
    args.subnet = args.subnet or env.get("LOCALVM_SUBNET") or None
    args.bridge = args.bridge or env.get("LOCALVM_BRIDGE") or None
    if args.index is None:
        args.index = env_index(parser, env.get("LOCALVM_INDEX"))
    return args


def resolve_machine(
    args: argparse.Namespace, recorded: VMState | None, state_root: Path = STATE_ROOT
) -> Machine:
    """The VM the options describe; what they leave unset comes from the VM's state file (it
    runs, or died without cleaning up), else the defaults: the veth VM of index 1.

    So `--name LAB2 address` (or ssh, stop) of a lab VM that runs needs no other option.
    """
    subnet = args.subnet or (recorded.subnet if recorded else DEFAULT_SUBNET)
    bridge = args.bridge or (recorded.bridge if recorded else None)
    index = args.index if args.index is not None else (recorded.index if recorded else 1)
    return Machine(
        validate_name(args.name),
        parse_subnet(subnet),
        state_root,
        bridge=validate_bridge(bridge) if bridge else None,
        index=index,
    )


def recorded_state(name: str) -> VMState | None:
    """The VM's state file if this user can read it (address and ssh-config run as anyone)."""
    try:
        return read_state(Machine(validate_name(name), parse_subnet(DEFAULT_SUBNET)).state_file)
    except OSError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.release is not None:
            validate_release(args.release)
        if args.command == "lab":
            check_preconditions()
            return cmd_lab(args.name, parse_subnet(args.subnet), args)
        machine = resolve_machine(args, recorded_state(args.name))
        if args.command not in NEEDS_NOTHING:
            check_preconditions()
        handler = COMMANDS[args.command]
        if args.command in LOCKED:
            with vm_lock(machine):
                return handler(machine, args)
        return handler(machine, args)
    except PreconditionError as exc:
        print(f"localvm: {exc}", file=sys.stderr)
        return 2
    except LocalVMError as exc:
        print(f"localvm: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"localvm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("localvm: interrupted", file=sys.stderr)
        return 130
