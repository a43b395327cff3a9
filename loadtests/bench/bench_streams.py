"""Open /events streams against none: the p99 of /healthz and of the captcha flow with 100
streams held open (10 clients x 10) against the same without, in alternating rounds.

The deployed VM as it is (whichever app server runs). The streams come from
loadtests/streams.py, run on the VM (its python3, the script on stdin) with one source address
per client in 127.0.0.0/8, so nginx sees 10 clients. The load comes from this host at a fixed
rate (benchlib.SteadyLoad, a new https connection per request or per flow, to the deployed
site, its certificate verified against the config's CA: a TLS handshake in each, alike in both
phases): GET /healthz, and the
captcha flow (create with the oracle header, GET its image, verify the right answer), timed as
a whole. A round's ratio is its with-streams p99 over its baseline p99; the verdict is on the
median of the rounds' ratios.
Usage: make bench-streams  (the VM must be deployed: make demo)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchlib import (
    LOCALVM,
    SteadyLoad,
    checked,
    connection_to,
    get_ok,
    on_vm,
    p99,
    running_server,
    secret,
    vm_target,
    write_report,
)
from target import Target

GOAL = 2.0  # with-streams p99 / baseline p99, per metric
HOLDER = Path(__file__).resolve().parents[1] / "streams.py"
METRICS = {"healthz": "/healthz", "flow": "captcha flow"}
MIN_SAMPLES = 20


def flow(site: Target, oracle: str, timeout: float = 10) -> Callable[[], bool]:
    """One captcha flow on one connection (https, verified, to the deployed site): create,
    image, verify with the right answer."""
    json_headers = {"Content-Type": "application/json", "X-Captcha-Oracle": oracle}
    connect = connection_to(site, timeout)

    def request() -> bool:
        connection = connect()
        try:
            connection.request("POST", "/api/captchas", b"{}", json_headers)
            response = connection.getresponse()
            body = response.read()
            if response.status != 201:
                return False
            captcha = json.loads(body)
            connection.request("GET", captcha["image_url"])
            response = connection.getresponse()
            if response.status != 200 or not response.read().startswith(b"\x89PNG"):
                return False
            answer = json.dumps({"answer": captcha["answer"]}).encode()
            connection.request("POST", captcha["verify_url"], answer, json_headers)
            response = connection.getresponse()
            return response.status == 200 and json.loads(response.read()).get("valid") is True
        finally:
            connection.close()

    return request


def phase_p99(samples: list[float]) -> float | None:
    """The p99 in ms, or None with too few samples to tell (a void figure)."""
    return p99(samples) * 1000 if len(samples) >= MIN_SAMPLES else None


def summarize(baseline: list[float | None], streams: list[float | None]) -> dict:
    """Per-round ratios, their median and spread, and the medians of the p99s."""
    pairs = [(b, s) for b, s in zip(baseline, streams, strict=True) if b and s is not None]
    ratios = [s / b for b, s in pairs]
    void = len(pairs) < len(baseline)
    median = statistics.median(ratios) if ratios and not void else None
    return {
        "baseline_p99_ms": statistics.median(b for b in baseline if b) if any(baseline) else None,
        "streams_p99_ms": statistics.median(s for s in streams if s) if any(streams) else None,
        "ratios": ratios,
        "ratio_median": median,
        "ratio_min": min(ratios, default=None),
        "ratio_max": max(ratios, default=None),
        "met": median is not None and median <= GOAL,
    }


def holder_command(args: argparse.Namespace, hold: float) -> str:
    url = f"http://127.0.0.1/events?max_seconds={hold + 30:g}"
    return (
        f"python3 - --url '{url}' --clients {args.clients} --per-client {args.per_client}"
        f" --hold {hold:g} --stagger {args.stagger:g}"
    )


def open_streams(args: argparse.Namespace) -> tuple[subprocess.Popen, dict]:
    """Starts the holder on the VM; returns it and its "opened" line once all 200."""
    hold = args.stagger + args.settle + args.seconds + 60  # it stops itself if we die
    holder = subprocess.Popen(
        [*LOCALVM, "ssh", "--", holder_command(args, hold)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    holder.stdin.write(HOLDER.read_text())
    holder.stdin.close()
    line = holder.stdout.readline()
    opened = json.loads(line) if line.startswith("{") else {"opened": {}}
    want = args.clients * args.per_client
    if opened["opened"] != {"200": want}:
        stop_streams(holder, opened)
        sys.exit(f"bench: expected {want} streams opened with 200, got {line.strip() or 'none'}")
    return holder, opened


def stop_streams(holder: subprocess.Popen, opened: dict) -> dict:
    """SIGTERM to the holder on the VM; its final line ({} if it gave none)."""
    if "pid" in opened:
        on_vm(f"kill {int(opened['pid'])} 2>/dev/null || true")
    try:
        holder.wait(timeout=30)  # its output is two short lines: no pipe fills up
    except subprocess.TimeoutExpired:
        holder.kill()
        holder.wait()
    out = holder.stdout.read()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def measure(site: Target, oracle: str, args: argparse.Namespace) -> dict:
    loads = {
        "healthz": SteadyLoad(get_ok(site, 0, "/healthz"), args.rate, args.threads),
        "flow": SteadyLoad(flow(site, oracle), args.rate, args.threads),
    }
    with loads["healthz"], loads["flow"]:
        time.sleep(args.seconds)
    result: dict = {}
    for name, load in loads.items():
        samples = [seconds for _, seconds in load.samples]
        result[name] = {"p99_ms": phase_p99(samples), "ok": len(samples), "failed": load.failures}
    return result


def phase(site: Target, oracle: str, args: argparse.Namespace, streams: bool) -> dict:
    if not streams:
        return measure(site, oracle, args)
    holder, opened = open_streams(args)
    try:
        time.sleep(args.settle)
        result = measure(site, oracle, args)
    finally:
        final = stop_streams(holder, opened)
    result["holder"] = {**opened, **final}
    return result


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "void" if value is None else format(value, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="of each phase, alternating")
    parser.add_argument("--seconds", type=float, default=15, help="of load per phase")
    parser.add_argument("--rate", type=float, default=40, help="req/s of each load (flows/s)")
    parser.add_argument("--threads", type=int, default=8, help="of each load")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--per-client", type=int, default=10)
    parser.add_argument("--stagger", type=float, default=3, help="seconds to open the streams")
    parser.add_argument("--settle", type=float, default=2, help="seconds between open and load")
    args = parser.parse_args()

    site, oracle, server = vm_target(), secret("oracle_secret"), running_server()
    print(f"bench: {site.url}: {checked(site.url, site.ca_file)}", flush=True)
    rounds: dict[str, list[dict]] = {"baseline": [], "streams": []}
    for n in range(1, args.rounds + 1):
        for name in rounds:
            print(f"bench: round {n}/{args.rounds}, {name}", flush=True)
            rounds[name].append(phase(site, oracle, args, name == "streams"))
            time.sleep(1)

    summary = {
        metric: summarize(
            [r[metric]["p99_ms"] for r in rounds["baseline"]],
            [r[metric]["p99_ms"] for r in rounds["streams"]],
        )
        for metric in METRICS
    }
    failed = sum(r[m]["failed"] for rs in rounds.values() for r in rs for m in METRICS)
    early = sum(r["holder"].get("ended_early", 0) for r in rounds["streams"])
    early += sum("final" not in r["holder"] for r in rounds["streams"])  # the holder died
    streams = args.clients * args.per_client
    print(
        f"\n{server}: p99 without and with {streams} /events stream(s), {args.per_client} from"
        f" each of {args.clients} client(s); {args.rate:g} req/s of each load; {args.rounds}"
        f" rounds of {args.seconds:g} s; medians"
    )
    print(f"  {'metric':<13} {'no streams':>10} {'streams':>10} {'ratio':>6}  (min..max)   goal")
    for metric, label in METRICS.items():
        s = summary[metric]
        spread = f"({fmt(s['ratio_min'], '.2f')}..{fmt(s['ratio_max'], '.2f')})"
        print(
            f"  {label:<13} {fmt(s['baseline_p99_ms']):>7} ms {fmt(s['streams_p99_ms']):>7} ms"
            f" {fmt(s['ratio_median'], '.2f'):>6}  {spread:<12} <= {GOAL:.1f}"
            f"  {'met' if s['met'] else 'MISSED'}"
        )
    print(f"  failed requests: {failed or 'none'}; streams that ended early: {early or 'none'}")
    report = {"server": server, "args": vars(args), "rounds": rounds, "summary": summary}
    print(f"  report: {write_report('bench-streams', report)}")
    return 0 if all(s["met"] for s in summary.values()) and not failed and not early else 1


if __name__ == "__main__":
    sys.exit(main())
