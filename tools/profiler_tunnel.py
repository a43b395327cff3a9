"""make profiler: an SSH tunnel to an app host's nginx, so that /_profiler/ is reached from the
host's loopback (the one client nginx lets in besides profiling_allow). Runs until Ctrl-C."""

from __future__ import annotations

import argparse
import subprocess
import sys

from apphost import app_host


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="local")
    parser.add_argument("--host", default="app[0]", help="inventory host (default: first app)")
    parser.add_argument("--port", type=int, default=8081, help="local port of the tunnel")
    args = parser.parse_args()

    target = app_host(args.env, args.host)
    if not target.enabled("profiling"):
        print(f"profiler: profiling_enabled is off for {target.name} in configs/{args.env}")
        return 1
    secrets = target.secrets_path()
    base = f"http://127.0.0.1:{args.port}"
    print(f"Tunnel: {base}/ -> {target.name}:{target.nginx_port} (Ctrl-C closes it)")
    print(f"  profiles   {base}/_profiler/showall")
    print(f"  user       admin (profiling_username)   password: {secrets}/profiling_password")
    print("  profile a request to any path (the token stays in the controller's secrets dir):")
    print(
        f'    curl -H "X-Wsgiprobe-Profile: $(cat {secrets}/profiling_token)"'
        f" {base}{target.health_path}"
    )
    sys.stdout.flush()
    forward = f"127.0.0.1:{args.port}:127.0.0.1:{target.nginx_port}"
    command = target.ssh("-N", "-o", "ExitOnForwardFailure=yes", "-L", forward)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
