"""make pdb: over ssh, signal worker N of an app host's server and attach this terminal to the
pdb session it opens (the pdb role's attach command, i.e. python -m wsgiprobe.pdb_attach)."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from apphost import app_host


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="local")
    parser.add_argument("--host", default="app[0]", help="inventory host (default: first app)")
    parser.add_argument("--worker", type=int, default=1, help="worker index, 1-based")
    parser.add_argument(
        "--poke", action="store_true", help="if the worker is idle, send requests to wake it"
    )
    args = parser.parse_args()
    if args.worker < 1:
        parser.error("--worker must be 1 or more")

    target = app_host(args.env, args.host)
    if not target.enabled("pdb"):
        print(f"pdb: pdb_enabled is off for {target.name} in configs/{args.env}", file=sys.stderr)
        return 1
    remote = [target.pdb_attach_command, "--worker", str(args.worker)]
    if args.poke:
        remote.append("--poke")
    if target.user != "root":
        remote = ["sudo", *remote]  # it signals the app user's workers and reads their records
    port = int(target.pdb_base_port) + args.worker
    print(
        f"pdb: worker {args.worker} on {target.name} (port {port} on its loopback); 'c' lets it"
        " go on. An idle worker opens its session at its next request"
        + (": poking it." if args.poke else " (POKE=1 sends one)."),
        file=sys.stderr,
        flush=True,
    )
    # -t: a terminal on the host, so that the session is line-edited and Ctrl-C detaches.
    return subprocess.call([*target.ssh("-t"), shlex.join(remote)])


if __name__ == "__main__":
    sys.exit(main())
