"""What the benchmarks share: the VM, wrk, CPU pinning, reports.

Benchmarks compare in one run on one machine and print ratios; absolute figures depend on the
machine. The load generator (wrk, on the host) and the measured server (in the VM) are pinned
to different CPUs, so that a figure is per core of the server.

The deployed site answers the host over https only (plain http redirects): requests to it go
to the target of loadtests/target.py (the VM's https URL), verified against configs/local's
CA. wrk verifies no certificate (SSL_VERIFY_NONE): a benchmark that points wrk at https checks
the certificate once with Python's ssl first (wrk_https_checked). The benchmarks' own
app-server instances (their own ports) stay plain http: they are not the deployed site.
"""

from __future__ import annotations

import datetime
import http.client
import json
import math
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# The benchmarks are scripts in loadtests/bench/; the target module is loadtests' own.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
import target as targets

ROOT = targets.ROOT
LOCALVM = targets.LOCALVM
REPORTS = ROOT / "loadtests" / "reports"
# The serving release's virtualenv (the deploy's current link).
VENV = "/srv/sample_app/current/venv"
# The deployed app server's master and request workers (not the stream pool's), as the toolkit
# finds them (python -m wsgiprobe.discovery, from the sources the app's env file names): a shell
# word list of their pids, for cpu_seconds and pin (other processes: matching).
DISCOVERY = f"/srv/sample_app/bin/run-with-env {VENV}/bin/python -m wsgiprobe.discovery"
SERVER_PIDS = f'$({DISCOVERY} | awk \'$1 == "master" {{print $2}} $1 == "worker" {{print $3}}\')'
CPUS = os.cpu_count() or 1
# The measured server on one CPU, the load generator (and nginx) on another.
APP_CPU, FRONT_CPU = (1, 0) if CPUS > 1 else (0, 0)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc/PID/stat's unit (one kernel with the VM)


def on_vm(command: str, stdin: str = "") -> str:
    proc = subprocess.run(
        [*LOCALVM, "ssh", "--", command], input=stdin, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.exit(f"bench: on the VM, {command!r} failed:\n{proc.stderr}{proc.stdout}")
    return proc.stdout.strip()


def vm_address() -> str:
    """The local VM's address (target.py asks the VM tool; exits with the reason)."""
    try:
        return targets.vm_address()
    except targets.TargetError as exc:
        sys.exit(f"bench: {exc}")


def vm_target() -> targets.Target:
    """The deployed site: the VM's https URL and the CA to trust (exits with the reason)."""
    try:
        return targets.vm_target()
    except targets.TargetError as exc:
        sys.exit(f"bench: {exc}")


def checked(url: str, ca: Path | None) -> str:
    """Verifies url's certificate once with Python's ssl (chain against ca, and the host
    name): wrk, which runs next, verifies nothing. Exits with the reason on failure."""
    try:
        return targets.check_certificate(url, ca)
    except targets.TargetError as exc:
        sys.exit(f"bench: {exc}")


def running_server() -> str:
    """The deployed app server, uwsgi or gunicorn, as the toolkit finds it on the VM."""
    return json.loads(on_vm(f"{DISCOVERY} --json"))["server"]


def matching(pattern: str) -> str:
    """A shell word list of the pids of the VM's processes whose command line matches pattern
    (as SERVER_PIDS is of the app server's)."""
    return f"$(pgrep -f '{pattern}')"


def start_uwsgi(
    work: str, port: int, settings: dict[str, str], args: str, cpu: int | None = None
) -> None:
    """A uWSGI instance of its own in the VM, from the deployed venv and env file (settings
    override it), pinned to cpu if given, daemonized with its pidfile in work; stop_uwsgi(work)
    stops them all."""
    exports = " ".join(f"{key}={shlex.quote(value)}" for key, value in settings.items())
    pinned = f"taskset -c {cpu} " if cpu is not None else ""
    on_vm(
        f"/srv/sample_app/bin/run-with-env env {exports} {pinned}"
        f"{VENV}/bin/uwsgi --master {args} --chdir /srv/sample_app --uid sample_app"
        f" --gid sample_app --disable-logging --need-app --pidfile {work}/{port}.pid"
        f" --daemonize {work}/{port}.log"
    )


def stop_uwsgi(work: str) -> None:
    """Stops every instance start_uwsgi(work, ...) started, and waits until they are gone (the
    next one may take the same port)."""
    on_vm(
        f"for f in {work}/*.pid; do [ -e $f ] || continue; pid=$(cat $f);"
        f" {VENV}/bin/uwsgi --stop $f; for i in $(seq 100); do"
        " kill -0 $pid 2>/dev/null || break; sleep 0.1; done; rm -f $f; done"
    )


def wait_ready(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"bench: {url} did not answer within {seconds} s")
            time.sleep(0.3)


def process_ticks(stat_lines: str) -> int:
    """Sum of utime, stime, cutime and cstime over /proc/PID/stat lines (clock ticks)."""
    total = 0
    for line in stat_lines.splitlines():
        if line.strip():
            # The command name (field 2) may hold spaces: count the fields after its ')'.
            fields = line.rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15])
    return total


def cpu_seconds(pids: str) -> float:
    """CPU seconds so far of the VM's processes (SERVER_PIDS, or matching(pattern))."""
    stats = on_vm(f"for pid in {pids}; do cat /proc/$pid/stat; done; true")
    return process_ticks(stats) / CLOCK_TICKS


def pin(pids: str, cpus: str) -> None:
    """Pins the VM's processes (SERVER_PIDS, or matching(pattern)) to cpus."""
    on_vm(f"for pid in {pids}; do taskset -a -p -c {cpus} $pid >/dev/null; done")


def secret(name: str) -> str:
    return (targets.VM_SECRETS / name).read_text().strip()


def create_captcha(site: targets.Target) -> str:
    """A captcha's image URL (the oracle header lifts the rate limit), made through the
    deployed site, its certificate verified."""
    request = urllib.request.Request(
        f"{site.url}/api/captchas",
        data=b"{}",
        headers={"Content-Type": "application/json", "X-Captcha-Oracle": secret("oracle_secret")},
        method="POST",
    )
    context = targets.ssl_context(site.ca_file) if site.https else None
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return json.load(response)["image_url"]


@dataclass
class WrkResult:
    rate: float
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]  # connect, read, write, timeout: {} when wrk printed none


def parse_wrk(output: str) -> WrkResult:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rate is None:
        raise ValueError(f"no Requests/sec in wrk's output:\n{output}")
    requests = re.search(r"(\d+) requests in", output)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    socket_errors = (
        {kind: int(n) for kind, n in re.findall(r"(\w+) (\d+)", errors.group(1))} if errors else {}
    )
    return WrkResult(
        float(rate.group(1)),
        int(requests.group(1)) if requests else 0,
        int(bad.group(1)) if bad else 0,
        socket_errors,
    )


def wrk_command(
    url: str, seconds: int, connections: int, headers: dict[str, str] | None = None
) -> list[str]:
    """wrk, one thread, pinned to FRONT_CPU."""
    args = ["taskset", "-c", str(FRONT_CPU), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    return [*args, url]


def run_wrk(
    url: str, seconds: int, connections: int, headers: dict[str, str] | None = None
) -> tuple[float, int]:
    """Requests per second and the number of non-2xx answers (a rate of errors is no rate)."""
    command = wrk_command(url, seconds, connections, headers)
    result = parse_wrk(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    if result.socket_errors:
        errors = ", ".join(f"{kind} {n}" for kind, n in result.socket_errors.items())
        print(f"  wrk: Socket errors: {errors}")
    return result.rate, result.non_2xx


def write_report(name: str, data: dict) -> Path:
    REPORTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    report = REPORTS / f"{name}-{stamp}.json"
    report.write_text(json.dumps(data, indent=2))
    return report.relative_to(ROOT)


def p99(values: list[float]) -> float:
    """The 99th percentile, nearest rank: the smallest value at least 99% of them do not exceed."""
    if not values:
        raise ValueError("p99 of no values")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def connection_to(
    site: targets.Target, timeout: float = 10
) -> Callable[[], http.client.HTTPConnection]:
    """New connections to site: https verified against its CA (one context for all), or http."""
    parts = urllib.parse.urlsplit(site.url)
    host = parts.hostname or ""
    if not site.https:
        return lambda: http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
    context = targets.ssl_context(site.ca_file)
    return lambda: http.client.HTTPSConnection(
        host, parts.port or 443, timeout=timeout, context=context
    )


def get_ok(
    address: str | targets.Target, port: int, path: str, timeout: float = 10
) -> Callable[[], bool]:
    """A request for SteadyLoad: GET path on a new connection; True on a 200. address: an
    address (plain http on port), or a target (its URL; https verified, a handshake each time)."""
    connect = (
        connection_to(address, timeout)
        if isinstance(address, targets.Target)
        else lambda: http.client.HTTPConnection(address, port, timeout=timeout)
    )

    def request() -> bool:
        connection = connect()
        try:
            connection.request("GET", path)
            return connection.getresponse().status == 200
        finally:
            connection.close()

    return request


class SteadyLoad:
    """Calls request() at a fixed rate from a few threads (an open-loop load, not wrk's closed
    loop: a slow answer does not lower the rate while a thread is free); each success's latency
    is kept with its send time. request returns True on success; False, an OSError (a timeout
    too), an HTTPException, a ValueError or a KeyError count as a failure."""

    def __init__(self, request: Callable[[], bool], rate: float, threads: int = 4) -> None:
        self.request, self.interval = request, threads / rate
        self.samples: list[tuple[float, float]] = []  # (sent, seconds)
        self.failures = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, offset: int) -> None:
        next_send = time.monotonic() + offset * self.interval / len(self._threads)
        while not self._stop.wait(max(0.0, next_send - time.monotonic())):
            sent = time.monotonic()
            try:
                ok = self.request()
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                ok = False  # a timeout, a broken answer, a body without what the flow needs
            if ok:
                self.samples.append((sent, time.monotonic() - sent))
            else:
                self.failures += 1
            next_send += self.interval

    def p99(self, start: float = -math.inf, end: float = math.inf) -> tuple[float, int]:
        """The p99 (seconds) of the successes sent in [start, end), and their number."""
        window = [s for sent, s in self.samples if start <= sent < end]
        if len(window) < 20:
            sys.exit(f"bench: only {len(window)} background requests in a phase: raise --rate")
        return p99(window), len(window)
