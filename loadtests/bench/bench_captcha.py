"""Captcha images per second per core: the library alone vs the endpoint behind nginx.

One run, one machine, as a ratio: the app server's processes are pinned to one CPU of the
VM, and nginx and the load generator (wrk) to another, so that both figures are per core.
The library alone runs in the VM's venv, on that same CPU, with the app's image settings.
The endpoint is the deployed site's, over https (its certificate verified once with Python's
ssl before wrk runs: wrk verifies none), with keep-alive.
Usage: make bench-captcha  (the VM must be deployed: make demo)
"""

from __future__ import annotations

import argparse
import statistics
import sys

from benchlib import (
    APP_CPU,
    CPUS,
    FRONT_CPU,
    SERVER_PIDS,
    VENV,
    checked,
    cpu_seconds,
    create_captcha,
    matching,
    on_vm,
    pin,
    run_wrk,
    running_server,
    vm_target,
    write_report,
)

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    site = vm_target()
    server = running_server()
    url = site.url + create_captcha(site)
    print(f"bench: {site.url}: {checked(url, site.ca_file)}")
    library_code = LIBRARY_ALONE.format(seconds=args.seconds)

    # Alternate the two measurements and keep the medians: a noisy neighbour on the machine
    # then hits both sides alike instead of skewing the ratio.
    libraries: list[float] = []
    endpoints: list[float] = []
    rates: list[float] = []
    non_2xx = 0
    every = f"0-{CPUS - 1}"
    for round_ in range(1, args.rounds + 1):
        print(
            f"bench: round {round_}/{args.rounds}: library alone, {args.seconds} s on CPU {APP_CPU}"
        )
        libraries.append(
            float(on_vm(f"cd /tmp && taskset -c {APP_CPU} {VENV}/bin/python -c '{library_code}'"))
        )
        print(
            f"bench: round {round_}/{args.rounds}: endpoint via nginx, {server} on CPU {APP_CPU},"
            f" nginx and wrk on CPU {FRONT_CPU}"
        )
        pin(SERVER_PIDS, str(APP_CPU))
        pin(matching("nginx"), str(FRONT_CPU))
        try:
            cpu_before = cpu_seconds(SERVER_PIDS)
            rate, bad = run_wrk(url, args.seconds, args.connections)
            cpu = cpu_seconds(SERVER_PIDS) - cpu_before
        finally:
            pin(SERVER_PIDS, every)
            pin(matching("nginx"), every)
        # Per core: images per CPU second of the app server's own processes. wrk's rate alone
        # is a floor whenever the app CPU was not saturated (nginx and wrk on the other one).
        endpoints.append(rate * args.seconds / cpu if cpu > 0 else rate)
        rates.append(rate)
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
    wrk_rate = statistics.median(rates)
    print(f"    (wrk's rate {wrk_rate:.1f} req/s; per core: per CPU second of {server})")
    print(
        f"  ratio endpoint / library                      {ratio:8.2f}"
        f"   target >= {TARGET_RATIO}: {verdict}"
    )
    if non_2xx:
        print("  the endpoint answered errors: its rate is not a measurement")

    report = write_report(
        "bench-captcha",
        {
            "server": server,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "library_rounds": libraries,
            "endpoint_rounds": endpoints,
            "endpoint_wrk_rates": rates,
            "library_per_core": library,
            "endpoint_per_core": endpoint,
            "non_2xx": non_2xx,
            "ratio": ratio,
            "target": TARGET_RATIO,
        },
    )
    print(f"  written to {report}")
    return 0 if non_2xx == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
