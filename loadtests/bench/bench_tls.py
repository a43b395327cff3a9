"""HTTPS's cost: the captcha endpoint over https with keep-alive vs plain http, per core, and
the rate of full TLS handshakes without keep-alive, in interleaved rounds, as ratios.

Where plain http is still served: the deployed site answers http on the VM's loopback only
(from the host, :80 redirects to https). So both sides are measured from inside the VM: wrk
there (Debian's, installed if missing), pinned to benchlib.FRONT_CPU with nginx, the app
server's request workers on benchlib.APP_CPU (bench_captcha.py's layout), against
  http   http://127.0.0.1/api/captchas/ID/image.png   the site's loopback server
  https  https://ADDR/api/captchas/ID/image.png        the site's public :443 server
with the same captcha, connections (-c, keep-alive: wrk's HTTP/1.1) and duration.
Why the comparison is fair: the same nginx with the same site (its :443 server serves the
locations its loopback :80 server does), the same app-server workers, the same generator on
the same CPU; the VM's own address is routed over the loopback device as 127.0.0.1 is. What
differs is TLS alone: the handshakes of wrk's connections at its start, and the encryption of
every request and answer. wrk verifies no certificate (SSL_VERIFY_NONE): Python's ssl
verifies the served one against the config's CA from the host first (target.py).

Per core is requests per CPU second of the serving processes, nginx's (master and workers)
and the app server's, from /proc/PID/stat in the VM before and after each run: TLS costs nginx
CPU, which wall-clock req/s on a shared 2-core machine would hide (the app CPU is the limit)
or blur (+-15% between runs). The goal: https per core >= 0.9 x http's (issue 20).

Handshakes: `openssl s_time -new` from the host to the deployed :443 (a full handshake per
connection: a new session each time, no resumption, no request), pinned to FRONT_CPU, with
nginx moved alone to APP_CPU (the app idles meanwhile); the rate, and per CPU second of nginx.

Rounds alternate the order (http https, then https http, ...), a handshake run in each; the
table shows medians with their spread (min..max), and ratios per round. A figure with a non-2xx
answer, connect/timeout errors or a failed handshake count is void; any void: exit 1.
Usage: make bench-tls  (also the second part of make bench; the VM must be deployed: make demo)
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench_servers import busy_share, cpu_times
from benchlib import (
    APP_CPU,
    CLOCK_TICKS,
    CPUS,
    FRONT_CPU,
    SERVER_PIDS,
    checked,
    create_captcha,
    matching,
    on_vm,
    parse_wrk,
    pin,
    process_ticks,
    running_server,
    vm_target,
    write_report,
)

GOAL = 0.90  # https per core / http per core, keep-alive, captcha endpoint
NGINX_PATTERN = "[n]ginx: "  # master and workers; the bracket keeps the shell itself out
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIDES = ("http", "https")


# --- pure: parsing and figures -------------------------------------------------------------


def parse_s_time(output: str) -> int:
    """Connections `openssl s_time` completed (its first summary line)."""
    match = re.search(r"(\d+) connections in [\d.]+s", output)
    if match is None:
        raise ValueError(f"no connection count in openssl s_time's output:\n{output[-800:]}")
    return int(match.group(1))


def split_ticks(output: str) -> tuple[int, int]:
    """(app server, nginx) clock ticks from serving_ticks()'s output: /proc/PID/stat lines of
    the app server's processes, a line `--`, then nginx's."""
    app, _, nginx = output.partition("\n--")
    return process_ticks(app), process_ticks(nginx)


@dataclass
class Run:
    """One measurement of one side (or of the handshakes)."""

    side: str
    requests: int  # wrk's requests, or s_time's completed handshakes
    seconds: float  # the generator's own duration (wall)
    app_cpu: float  # CPU seconds of the app server's processes meanwhile
    nginx_cpu: float  # ... of nginx's
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    server_cpu_busy: float | None = None  # handshakes: how busy nginx's CPU was (any process)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def per_core(self) -> float | None:
        """Requests per CPU second of nginx and the app server together."""
        cpu = self.app_cpu + self.nginx_cpu
        return self.requests / cpu if cpu > 0 else None

    @property
    def nginx_per_core(self) -> float | None:
        return self.requests / self.nginx_cpu if self.nginx_cpu > 0 else None

    @property
    def void(self) -> str:
        """Why this run measures nothing, or ''."""
        hard = self.socket_errors.get("connect", 0) + self.socket_errors.get("timeout", 0)
        reasons = [f"{self.non_2xx} non-2xx"] if self.non_2xx else []
        reasons += [f"{hard} connect/timeout errors"] if hard else []
        if not self.requests:
            reasons.append("no request answered")
        return "; ".join(reasons)


@dataclass
class Spread:
    median: float
    low: float
    high: float

    def show(self, fmt: str = "{:,.0f}") -> str:
        return f"{fmt.format(self.median)} ({fmt.format(self.low)}..{fmt.format(self.high)})"


def spread(values: list[float]) -> Spread | None:
    return Spread(statistics.median(values), min(values), max(values)) if values else None


def order(round_: int) -> tuple[str, str]:
    """http first in odd rounds, https first in even ones: neither always goes first."""
    return SIDES if round_ % 2 else SIDES[::-1]


@dataclass
class Summary:
    per_core: dict[str, Spread | None]  # side: requests per CPU second (nginx + app)
    rate: dict[str, Spread | None]  # side: req/s (wall)
    nginx_us: dict[str, Spread | None]  # side: nginx CPU microseconds per request
    ratio_per_core: Spread | None  # https / http, per round
    ratio_rate: Spread | None
    handshakes: Spread | None  # per second (wall)
    handshakes_per_nginx_core: Spread | None
    handshake_cpu_busy: Spread | None  # nginx's CPU meanwhile: below ~90%, the client limited
    void: list[str]

    @property
    def met(self) -> bool:
        return (
            not self.void and self.ratio_per_core is not None and self.ratio_per_core.median >= GOAL
        )


def summarize(rounds: list[dict[str, Run]]) -> Summary:
    """Each round: {'http': Run, 'https': Run, 'handshake': Run}. Ratios are taken within a
    round (the two sides measured back to back), then their median and spread."""
    void = [
        f"round {n} {name}: {run.void}"
        for n, runs in enumerate(rounds, 1)
        for name, run in runs.items()
        if run.void
    ]
    ok = [runs for runs in rounds if not any(run.void for run in runs.values())]

    def of(side: str, value: str) -> Spread | None:
        values = [getattr(runs[side], value) for runs in ok]
        return spread([v for v in values if v is not None])

    def nginx_us(side: str) -> Spread | None:
        values = [runs[side].nginx_cpu / runs[side].requests * 1e6 for runs in ok]
        return spread(values)

    per_core_ratios = [
        runs["https"].per_core / runs["http"].per_core
        for runs in ok
        if runs["https"].per_core and runs["http"].per_core
    ]
    rate_ratios = [runs["https"].rate / runs["http"].rate for runs in ok if runs["http"].rate]
    return Summary(
        per_core={side: of(side, "per_core") for side in SIDES},
        rate={side: of(side, "rate") for side in SIDES},
        nginx_us={side: nginx_us(side) for side in SIDES},
        ratio_per_core=spread(per_core_ratios),
        ratio_rate=spread(rate_ratios),
        handshakes=of("handshake", "rate"),
        handshakes_per_nginx_core=of("handshake", "nginx_per_core"),
        handshake_cpu_busy=of("handshake", "server_cpu_busy"),
        void=void,
    )


def render(summary: Summary, heading: str) -> str:
    def cell(value: Spread | None, fmt: str = "{:,.0f}") -> str:
        return value.show(fmt) if value else "void"

    lines = [heading, ""]
    lines.append(f"  {'side':<24}{'req/s':>22}{'per core':>22}{'nginx CPU/request':>24}")
    labels = {"http": "http (VM loopback)", "https": "https keep-alive"}
    for side in SIDES:
        lines.append(
            f"  {labels[side]:<24}{cell(summary.rate[side]):>22}"
            f"{cell(summary.per_core[side]):>22}"
            f"{cell(summary.nginx_us[side], '{:,.0f}') + ' us':>24}"
        )
    lines.append("")
    verdict = "met" if summary.met else "NOT met"
    lines.append(
        f"  https / http, per core   {cell(summary.ratio_per_core, '{:.2f}')}"
        f"   goal >= {GOAL}: {verdict}"
    )
    lines.append(f"  https / http, req/s      {cell(summary.ratio_rate, '{:.2f}')}")
    lines.append("")
    lines.append(
        f"  full TLS handshakes, no keep-alive: {cell(summary.handshakes)} /s,"
        f" {cell(summary.handshakes_per_nginx_core)} per CPU second of nginx"
    )
    if summary.handshake_cpu_busy:
        busy = summary.handshake_cpu_busy
        lines.append(
            f"    nginx's CPU busy {busy.show('{:.0%}')} meanwhile"
            + ("" if busy.median >= 0.9 else ": the client (openssl) was the limit of the rate")
        )
    lines.append("  void: " + ("; ".join(summary.void) if summary.void else "none"))
    return "\n".join(lines)


# --- the VM ----------------------------------------------------------------------------------


def ensure_wrk() -> None:
    """wrk in the VM (Debian's package), the generator of both sides."""
    if not on_vm("command -v wrk || true"):
        print("bench: installing wrk in the VM (Debian's package)", flush=True)
        on_vm("DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null")


def serving_ticks() -> tuple[int, int]:
    out = on_vm(
        f"for pid in {SERVER_PIDS}; do cat /proc/$pid/stat; done; echo --;"
        f" for pid in {matching(NGINX_PATTERN)}; do cat /proc/$pid/stat; done; true"
    )
    return split_ticks(out)


def measure_side(side: str, url: str, seconds: int, connections: int) -> Run:
    app0, nginx0 = serving_ticks()
    started = time.monotonic()
    out = on_vm(f"taskset -c {FRONT_CPU} wrk -t1 -c{connections} -d{seconds}s '{url}'")
    wall = time.monotonic() - started
    app1, nginx1 = serving_ticks()
    result = parse_wrk(out)
    # wrk's own duration: its requests over its rate (the ssh round trip is not in it).
    own = result.requests / result.rate if result.rate else wall
    return Run(
        side,
        result.requests,
        own,
        (app1 - app0) / CLOCK_TICKS,
        (nginx1 - nginx0) / CLOCK_TICKS,
        result.non_2xx,
        result.socket_errors,
    )


def measure_handshakes(host: str, port: int, seconds: int) -> Run:
    """Full handshakes from the host with nginx alone on APP_CPU (back on FRONT_CPU after)."""
    pin(matching(NGINX_PATTERN), str(APP_CPU))
    try:
        app0, nginx0 = serving_ticks()
        stat0 = cpu_times(Path("/proc/stat").read_text())
        started = time.monotonic()
        proc = subprocess.run(
            ["taskset", "-c", str(FRONT_CPU), "openssl", "s_time", "-connect", f"{host}:{port}",
             "-new", "-time", str(seconds)],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        wall = time.monotonic() - started
        stat1 = cpu_times(Path("/proc/stat").read_text())
        app1, nginx1 = serving_ticks()
    finally:
        pin(matching(NGINX_PATTERN), str(FRONT_CPU))
    count = parse_s_time(proc.stdout) if proc.returncode == 0 else 0
    if proc.returncode:
        print(f"bench: openssl s_time failed:\n{proc.stdout[-600:]}{proc.stderr[-600:]}")
    return Run(
        "handshake",
        count,
        wall,
        (app1 - app0) / CLOCK_TICKS,
        (nginx1 - nginx0) / CLOCK_TICKS,
        server_cpu_busy=busy_share(stat0, stat1, APP_CPU),
    )


def preflight(http_url: str, https_url: str, ca: Path | None) -> None:
    """Both URLs answer 200 with a PNG (a 301 would count as an answer in wrk)."""
    import urllib.request

    from target import ssl_context

    status = on_vm(f"curl -s -o /dev/null -w '%{{http_code}}' '{http_url}'")
    if status != "200":
        sys.exit(f"bench: {http_url} in the VM answered {status}, not 200")
    with urllib.request.urlopen(https_url, timeout=10, context=ssl_context(ca)) as response:
        if response.status != 200 or not response.read().startswith(PNG_MAGIC):
            sys.exit(f"bench: {https_url} answered {response.status} without a PNG")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    site = vm_target()
    if not site.https:
        sys.exit(f"bench: {site.url} is not https")
    parts = urlsplit(site.url)
    host, port = parts.hostname or "", parts.port or 443
    print(f"bench: {site.url}: {checked(site.url, site.ca_file)}", flush=True)
    ensure_wrk()
    server = running_server()
    every = f"0-{CPUS - 1}"
    rounds: list[dict[str, Run]] = []
    try:
        pin(SERVER_PIDS, str(APP_CPU))
        pin(matching(NGINX_PATTERN), str(FRONT_CPU))
        for n in range(1, args.rounds + 1):
            image = create_captcha(site)  # a fresh one each round: never near its TTL
            urls = {"http": f"http://127.0.0.1{image}", "https": f"{site.url}{image}"}
            if n == 1:
                preflight(urls["http"], urls["https"], site.ca_file)  # and warms the workers
            runs: dict[str, Run] = {}
            for side in order(n):
                print(f"bench: round {n}/{args.rounds}: {side}", flush=True)
                runs[side] = measure_side(side, urls[side], args.seconds, args.connections)
            print(f"bench: round {n}/{args.rounds}: handshakes", flush=True)
            runs["handshake"] = measure_handshakes(host, port, args.seconds)
            rounds.append(runs)
    finally:
        pin(SERVER_PIDS, every)
        pin(matching(NGINX_PATTERN), every)

    summary = summarize(rounds)
    print()
    print(
        render(
            summary,
            f"HTTPS vs plain HTTP, captcha image.png ({server}'s workers on CPU {APP_CPU};"
            f" nginx and wrk -c{args.connections} in the VM on CPU {FRONT_CPU});"
            f" {args.rounds} rounds of {args.seconds} s, alternating; median (min..max)\n"
            "  per core: requests per CPU second of nginx and the app server together;"
            " ratios: within each round",
        )
    )
    report = write_report(
        "bench-tls",
        {
            "server": server,
            "url": site.url,
            "seconds": args.seconds,
            "rounds": [{name: asdict(run) for name, run in runs.items()} for runs in rounds],
            "summary": asdict(summary),
            "goal": GOAL,
            "met": summary.met,
        },
    )
    print(f"  written to {report}")
    return 0 if not summary.void else 1


if __name__ == "__main__":
    sys.exit(main())
