"""The warm-up's cost: time to warm every worker against (ceil(N/K) + 1) x one worker's init,
and the p99 latency of a steady background load during the warm-up against its p99 just
before, in one run.

Each K gets a fresh uWSGI instance in the VM (N workers pinned to one CPU, plain HTTP on the
VM's address, its own stats server), from the deployed venv and env file, with a lazy init made
costly on purpose (FLASK_LAZYINIT_EXTRA_SECONDS of CPU). The background load (GET /healthz at
a fixed rate, a new connection per request, from this host) runs through both phases.
Usage: make bench-warmup  (the VM must be deployed: make demo)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

from benchlib import (
    APP_CPU,
    VENV,
    SteadyLoad,
    get_ok,
    on_vm,
    start_uwsgi,
    stop_uwsgi,
    vm_address,
    wait_ready,
    write_report,
)

WORK = "/tmp/bench-warmup"
PORT, STATS = 9201, "127.0.0.1:9202"
GOAL_P99_RATIO = 1.5


def warm_up(address: str, concurrency: int) -> tuple[float, list[dict]]:
    """Runs the warm-up on the VM; its wall time there, and each worker's init seconds."""
    out = on_vm(
        f"cd {WORK} && s=$(date +%s.%N) && {VENV}/bin/python -m wsgiprobe.warmup"
        f" --url http://{address}:{PORT}/lazyinit --uwsgi-stats {STATS}"
        f" --concurrency {concurrency} --deadline 120 2>/dev/null && e=$(date +%s.%N)"
        f" && echo $s $e && curl -s http://{address}:{PORT}/lazyinit?status"
    )
    stamps, status = out.splitlines()[-2:]
    started, ended = (float(x) for x in stamps.split())
    return ended - started, json.loads(status)["workers"]


def measure(address: str, workers: int, concurrency: int, init: float, args) -> dict:
    settings = {
        "WSGIPROBE_PROFILER": "0",
        "WSGIPROBE_LAZYINIT_DIR": f"{WORK}/lazyinit-{concurrency}",
        "WSGIPROBE_LAZYINIT_CONCURRENCY": str(concurrency),
        "FLASK_LAZYINIT_EXTRA_SECONDS": str(init),
    }
    server_args = (
        f"--processes {workers} --http11-socket {address}:{PORT} --stats {STATS}"
        " --module wsgiprobe.entrypoint:application"
    )
    start_uwsgi(WORK, PORT, settings, server_args, APP_CPU)
    try:
        wait_ready(f"http://{address}:{PORT}/healthz")
        with SteadyLoad(get_ok(address, PORT, "/healthz"), args.rate) as load:
            before = time.monotonic()
            time.sleep(args.before_seconds)
            started = time.monotonic()
            seconds, states = warm_up(address, concurrency)
            ended = time.monotonic()
        if not all(w["warm"] for w in states) or len(states) != workers:
            sys.exit(f"bench: the warm-up left workers cold: {states}")
        init_each = statistics.median(w["init_seconds"] for w in states)
        p99_before, n_before = load.p99(before, started)
        p99_during, n_during = load.p99(started, ended)
        budget = (math.ceil(workers / concurrency) + 1) * init_each
        return {
            "workers": workers,
            "concurrency": concurrency,
            "init_seconds_median": init_each,
            "warmup_seconds": seconds,
            "budget_seconds": budget,
            "warmup_vs_budget": seconds / budget,
            "p99_before_ms": p99_before * 1000,
            "p99_during_ms": p99_during * 1000,
            "p99_ratio": p99_during / p99_before,
            "background_requests": [n_before, n_during],
            "background_failures": load.failures,
        }
    finally:
        stop_uwsgi(WORK)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--init-seconds", type=float, default=0.5)
    parser.add_argument("--rate", type=float, default=100, help="background requests/s")
    parser.add_argument("--before-seconds", type=float, default=5)
    args = parser.parse_args()

    address = vm_address()
    on_vm(f"rm -rf {WORK} && mkdir -p {WORK} && chown sample_app: {WORK}")
    results = []
    for k in args.concurrency:
        print(f"bench: {args.workers} workers, K={k}, init {args.init_seconds} s", flush=True)
        results.append(measure(address, args.workers, k, args.init_seconds, args))

    print(f"\nwarm-up, uWSGI {args.workers} workers on one CPU, background {args.rate:g} req/s")
    print(
        f"  {'K':>2}  {'init s':>6}  {'warm-up s':>9}  {'(N/K+1)xinit':>12}  {'ratio':>5}"
        f"  {'p99 before':>10}  {'p99 during':>10}  {'ratio':>5}  goal"
    )
    failed = False
    for r in results:
        ok = r["warmup_vs_budget"] <= 1 and r["p99_ratio"] <= GOAL_P99_RATIO
        failed |= not ok or r["background_failures"] > 0
        print(
            f"  {r['concurrency']:>2}  {r['init_seconds_median']:6.2f}  {r['warmup_seconds']:9.2f}"
            f"  {r['budget_seconds']:12.2f}  {r['warmup_vs_budget']:5.2f}"
            f"  {r['p99_before_ms']:8.1f}ms  {r['p99_during_ms']:8.1f}ms  {r['p99_ratio']:5.2f}"
            f"  {'met' if ok else 'MISSED'} (<= 1.00, <= {GOAL_P99_RATIO})"
        )
        if r["background_failures"]:
            print(f"     {r['background_failures']} background requests failed")
    print(f"  report: {write_report('bench-warmup', {'results': results})}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
