"""Captcha images per second per core: the library alone vs the endpoint behind nginx.

One run, one machine, as a ratio: the app server's processes are pinned to one CPU of the
VM, and nginx and the load generator (wrk) to another, so that both figures are per core.
The library alone runs in the VM's venv, on that same CPU, with the app's image settings.
Usage: make bench-captcha  (the VM must be deployed: make demo)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCALVM = [sys.executable, str(ROOT / "tools" / "localvm.py")]
REPORTS = ROOT / "loadtests" / "reports"
VENV_PYTHON = "/srv/sample_app/venv/bin/python"
SERVER_PATTERN = "venv/bin/[u]wsgi |venv/bin/[g]unicorn "
TARGET_RATIO = 0.85

LIBRARY_ALONE = """
import time
from sample_app.captchas import render_png
render_png("WARMS")  # fonts load on the first render; the endpoint is warm too
count, started = 0, time.perf_counter()
while time.perf_counter() - started < {seconds}:
    render_png("ABCDE")
    count += 1
print(count / (time.perf_counter() - started))
"""


def on_vm(command: str) -> str:
    proc = subprocess.run([*LOCALVM, "ssh", "--", command], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench: on the VM, {command!r} failed:\n{proc.stderr}{proc.stdout}")
    return proc.stdout.strip()


def pin(pattern: str, cpus: str) -> None:
    on_vm(f"for pid in $(pgrep -f '{pattern}'); do taskset -a -p -c {cpus} $pid >/dev/null; done")


def create_captcha(address: str) -> str:
    secret = (ROOT / "configs/local/.secrets/localvm/oracle_secret").read_text().strip()
    request = urllib.request.Request(
        f"http://{address}/api/captchas",
        data=b"{}",
        headers={"Content-Type": "application/json", "X-Captcha-Oracle": secret},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["image_url"]


def run_wrk(url: str, seconds: int, connections: int, cpu: int) -> tuple[float, int]:
    out = subprocess.run(
        ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    if errors:
        print(f"  wrk: {errors.group(0)}")
    return rate, int(bad.group(1)) if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    address = subprocess.run(
        [*LOCALVM, "address"], capture_output=True, text=True, check=True
    ).stdout.strip()
    cpus = os.cpu_count() or 1
    app_cpu, front_cpu = (1, 0) if cpus > 1 else (0, 0)
    server = "uwsgi" if on_vm("pgrep -f 'venv/bin/[u]wsgi ' || true") else "gunicorn"
    url = f"http://{address}{create_captcha(address)}"
    library_code = LIBRARY_ALONE.format(seconds=args.seconds)

    # Alternate the two measurements and keep the medians: a noisy neighbour on the machine
    # then hits both sides alike instead of skewing the ratio.
    libraries: list[float] = []
    endpoints: list[float] = []
    non_2xx = 0
    every = f"0-{cpus - 1}"
    for round_ in range(1, args.rounds + 1):
        print(
            f"bench: round {round_}/{args.rounds}: library alone, {args.seconds} s on CPU {app_cpu}"
        )
        libraries.append(
            float(on_vm(f"cd /tmp && taskset -c {app_cpu} {VENV_PYTHON} -c '{library_code}'"))
        )
        print(
            f"bench: round {round_}/{args.rounds}: endpoint via nginx, {server} on CPU {app_cpu},"
            f" nginx and wrk on CPU {front_cpu}"
        )
        pin(SERVER_PATTERN, str(app_cpu))
        pin("nginx", str(front_cpu))
        try:
            rate, bad = run_wrk(url, args.seconds, args.connections, front_cpu)
        finally:
            pin(SERVER_PATTERN, every)
            pin("nginx", every)
        endpoints.append(rate)
        non_2xx += bad
    library = statistics.median(libraries)
    endpoint = statistics.median(endpoints)

    ratio = endpoint / library
    verdict = "met" if ratio >= TARGET_RATIO and non_2xx == 0 else "NOT met"
    print()
    print(f"captcha images per second per core ({server}, median of {args.rounds} rounds)")
    print(f"  library alone (render_png in the VM's venv)   {library:8.1f} img/s")
    print(
        f"  GET image.png through nginx                   {endpoint:8.1f} img/s"
        f"   non-2xx: {non_2xx}"
    )
    print(
        f"  ratio endpoint / library                      {ratio:8.2f}"
        f"   target >= {TARGET_RATIO}: {verdict}"
    )
    if non_2xx:
        print("  the endpoint answered errors: its rate is not a measurement")

    REPORTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    report = REPORTS / f"bench-captcha-{stamp}.json"
    report.write_text(
        json.dumps(
            {
                "server": server,
                "seconds": args.seconds,
                "rounds": args.rounds,
                "library_rounds": libraries,
                "endpoint_rounds": endpoints,
                "library_per_core": library,
                "endpoint_per_core": endpoint,
                "non_2xx": non_2xx,
                "ratio": ratio,
                "target": TARGET_RATIO,
            },
            indent=2,
        )
    )
    print(f"  written to {report.relative_to(ROOT)}")
    return 0 if non_2xx == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
