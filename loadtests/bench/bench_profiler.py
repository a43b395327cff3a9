"""The profiler's cost: throughput with the profiler on (not triggered, sampling 1%) and with raw
Dozer, as ratios of the plain app, in one run; then the profile directory after a 60 s load in
which every request asks to be profiled.

Each variant is its own uWSGI instance in the VM (one worker, pinned to one CPU, plain HTTP on
the VM's address), started side by side from the deployed venv and env file, and measured in
alternating rounds (medians), so that noise on the machine hits every variant alike.
Usage: make bench-profiler  (the VM must be deployed: make demo)
"""

from __future__ import annotations

import argparse
import statistics
import sys

from benchlib import (
    APP_CPU,
    create_captcha,
    on_vm,
    run_wrk,
    start_uwsgi,
    stop_uwsgi,
    vm_address,
    vm_target,
    wait_ready,
    write_report,
)

TOKEN = "bench-token-not-a-secret"
VARIANTS = {
    # name: (port, environment, goal as a ratio of "plain" on (light, captcha))
    "plain": (9101, {"WSGIPROBE_PROFILER": "0"}, None),
    "on, not triggered": (9102, {"WSGIPROBE_PROFILER_SAMPLE_RATE": "0"}, (0.97, 0.99)),
    "on, sampling 1%": (9103, {"WSGIPROBE_PROFILER_SAMPLE_RATE": "0.01"}, (0.90, 0.90)),
    "raw Dozer": (9104, {"WSGIPROBE_PROFILER": "0"}, None),
}
# Raw Dozer as it ships, with only its multiprocess assertion answered (see PITFALLS.md).
RAW_DOZER = """
from dozer import Profiler
from wsgiprobe.entrypoint import application as app
profiled = Profiler(app, profile_path="/tmp/bench-profiler/raw-dozer")
def application(environ, start_response):
    environ["wsgi.multiprocess"] = False
    return profiled(environ, start_response)
"""
WORK = "/tmp/bench-profiler"


def start(name: str, address: str) -> None:
    port, env, _ = VARIANTS[name]
    slug = name.split(",")[0].replace(" ", "-") + str(port)
    settings = {
        "WSGIPROBE_PROFILER": "1",
        "WSGIPROBE_PROFILER_DIR": f"{WORK}/{slug}",
        "WSGIPROBE_PROFILER_TOKEN": TOKEN,
        **env,
    }
    app = (
        f"--wsgi-file {WORK}/raw_dozer.py"
        if name == "raw Dozer"
        else "--module wsgiprobe.entrypoint:application"
    )
    start_uwsgi(
        WORK, port, settings, f"--processes 1 --http11-socket {address}:{port} {app}", APP_CPU
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--load-seconds", type=int, default=60)
    args = parser.parse_args()

    address = vm_address()
    image = create_captcha(vm_target())  # through the deployed site (https)
    on_vm(f"rm -rf {WORK} && mkdir -p {WORK}/raw-dozer && chown -R sample_app: {WORK}")
    on_vm(f"cat > {WORK}/raw_dozer.py", stdin=RAW_DOZER)
    endpoints = {"light (/healthz)": "/healthz", "captcha (image.png)": image}
    rates: dict[tuple[str, str], list[float]] = {}
    non_2xx = 0
    try:
        for name in VARIANTS:
            start(name, address)
        for port, _, _ in VARIANTS.values():
            for path in endpoints.values():
                wait_ready(f"http://{address}:{port}{path}")  # and warm: the lazy init runs
        for endpoint, path in endpoints.items():
            for round_ in range(1, args.rounds + 1):
                for name, (port, _, _) in VARIANTS.items():
                    print(f"bench: {endpoint}, round {round_}/{args.rounds}: {name}", flush=True)
                    rate, bad = run_wrk(
                        f"http://{address}:{port}{path}", args.seconds, args.connections
                    )
                    rates.setdefault((endpoint, name), []).append(rate)
                    non_2xx += bad
        raw_dir = on_vm(f"du -sb {WORK}/raw-dozer | cut -f1; ls {WORK}/raw-dozer | wc -l")
        port = VARIANTS["on, not triggered"][0]
        print(f"bench: {args.load_seconds} s of load, every request triggered", flush=True)
        load_rate, bad = run_wrk(
            f"http://{address}:{port}/healthz",
            args.load_seconds,
            args.connections,
            {"X-Wsgiprobe-Profile": TOKEN},
        )
        non_2xx += bad
        kept = on_vm(f"du -sb {WORK}/on{port} | cut -f1; ls {WORK}/on{port} | wc -l")
    finally:
        stop_uwsgi(WORK)

    medians = {key: statistics.median(values) for key, values in rates.items()}
    report: dict[str, object] = {"rounds": args.rounds, "seconds": args.seconds, "rates": {}}
    print()
    print(f"profiler cost, uWSGI 1 worker on one CPU, median of {args.rounds} rounds")
    print(f"  {'variant':<22}{'endpoint':<22}{'req/s':>9}{'ratio':>8}  goal")
    for endpoint in endpoints:
        plain = medians[(endpoint, "plain")]
        for name, (_, _, goals) in VARIANTS.items():
            rate = medians[(endpoint, name)]
            ratio = rate / plain
            goal = ""
            if goals:
                target = goals[0] if endpoint.startswith("light") else goals[1]
                goal = f">= {target}: {'met' if ratio >= target else 'NOT met'}"
            print(f"  {name:<22}{endpoint:<22}{rate:9.0f}{ratio:8.2f}  {goal}")
            report["rates"][f"{endpoint} / {name}"] = {"median": rate, "ratio": ratio}
    raw_bytes, raw_files = (int(x) for x in raw_dir.split())
    kept_bytes, kept_files = (int(x) for x in kept.split())
    raw_seconds = args.rounds * len(endpoints) * args.seconds
    print()
    print(
        f"  raw Dozer's directory after {raw_seconds} s of its rounds:"
        f" {raw_bytes / 1e6:8.1f} MB in {raw_files} files"
    )
    print(
        f"  the profiler's directory after {args.load_seconds} s, every request triggered"
        f" ({load_rate:.0f} req/s): {kept_bytes / 1e6:8.1f} MB in {kept_files} files"
    )
    print(f"  non-2xx answers in the whole run: {non_2xx}")
    report.update(raw_dozer_dir={"bytes": raw_bytes, "files": raw_files},
                  profiler_dir_after_load={"bytes": kept_bytes, "files": kept_files,
                                           "seconds": args.load_seconds, "rate": load_rate},
                  non_2xx=non_2xx)  # fmt: skip
    print(f"  written to {write_report('bench-profiler', report)}")
    return 0 if non_2xx == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
