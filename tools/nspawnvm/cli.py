"""The command line: options and their environment defaults, dispatch to the subcommands
under the per-VM lock, and exit statuses (1 for an error, 2 when this host cannot run the VM).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __doc__ as package_doc
from .commands import (
    cmd_address,
    cmd_destroy,
    cmd_ssh,
    cmd_ssh_config,
    cmd_status,
    cmd_stop,
    cmd_up,
)
from .config import DEFAULT_NAME, DEFAULT_SUBNET, LOCK_ROOT, Machine, parse_subnet, validate_name
from .errors import LocalVMError, PreconditionError
from .host import check_preconditions, file_lock
from .rootfs import DEFAULT_CACHE, DEFAULT_MIRROR

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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--name",
        default=env.get("LOCALVM_NAME", DEFAULT_NAME),
        help="VM name (env LOCALVM_NAME, default %(default)s)",
    )
    common.add_argument(
        "--subnet",
        default=env.get("LOCALVM_SUBNET", DEFAULT_SUBNET),
        help="VM subnet (env LOCALVM_SUBNET, default %(default)s)",
    )
    # The same options after the command too, without overriding the ones given before it.
    late = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    late.add_argument("--name")
    late.add_argument("--subnet")
    parser = argparse.ArgumentParser(
        prog="localvm.py", parents=[common], description=package_doc.split("\n\n")[0]
    )
    parser.set_defaults(
        cache=env.get("LOCALVM_CACHE", DEFAULT_CACHE),
        mirror=env.get("LOCALVM_MIRROR", DEFAULT_MIRROR),
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
    }
    for command, text in helps.items():
        p = sub.add_parser(command, parents=[late], help=text, description=text)
        if command == "ssh":
            p.add_argument("remote", nargs=argparse.REMAINDER, help="command to run in the VM")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        machine = Machine(validate_name(args.name), parse_subnet(args.subnet))
        if args.command not in NEEDS_NOTHING:
            check_preconditions()
        handler = COMMANDS[args.command]
        if args.command in LOCKED:
            with file_lock(LOCK_ROOT / f"{machine.name}.lock", machine.name):
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
