"""The open-model latency gate: arrivals at a fixed rate, latencies from the scheduled time.

    python loadtests/openload.py [--scenario flow|light] [--rate 20] [--duration 30s]
        [--host URL] [--ca-file FILE] [--thresholds FILE] [--max-connections 256]

Each arrival is sent at its scheduled time (start + i / rate) whether or not the earlier ones
have returned, on a connection of its own (a kept-alive idle one, else a new one), and its
latency is measured from that scheduled time, not from when it was sent: a server that stalls
for 1.5 s shows 1.5 s in the tail for every arrival of the stall, as a user sees it. locust
(run.py) is a closed loop: its users wait with the server, send nothing meanwhile, and the
stall is a handful of slow samples among many (coordinated omission).

Scenarios: `flow` (an arrival = create a captcha, GET its image, POST verify with the answer,
on one connection; the flow's latency runs from its scheduled start to its last response; each
request is recorded too, from the moment it was due: the first at the schedule, the next ones
at the previous answer) and `light` (an arrival = GET /healthz). Latencies go into HDR
histograms (hdrhistogram, 3 significant figures, microseconds).

The target, its CA and the oracle secret are run.py's (loadtests/target.py): without --host
the local VM over https, verified against configs/local's CA, with the deploy's oracle secret.
Thresholds: the [open] tables of thresholds.toml. The generator checks itself: the p99 of how
late arrivals started after their schedule (its event loop busy, or every connection of
--max-connections in use) must stay under [open] max_send_lag_ms, else the figures are partly
the generator's and the run exits 1. Exit codes: 0 pass, 1 the generator fell behind (or the
run broke), 2 usage, 3 a threshold breached. Reports: loadtests/reports/<stamp>-open-<scenario>/
summary.json (figures, checks, each histogram HDR-encoded, a per-second timeline).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
from hdrh.histogram import HdrHistogram

LOADTESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(LOADTESTS / "locustfiles"))
sys.path.insert(0, str(LOADTESTS))
import loadcheck  # noqa: E402
import run as runner  # noqa: E402
from loadcheck import group_name  # noqa: E402
from loadgen import parse_duration  # noqa: E402

import target  # noqa: E402

SCENARIOS = ("flow", "light")
FLOW = "flow"  # the name of a whole flow in the histograms and the thresholds
ORACLE_HEADER = "X-Captcha-Oracle"
CREATED_KEYS = frozenset({"id", "image_url", "verify_url", "expires_in", "answer"})
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Histograms in microseconds, 1 us to an hour, 3 significant figures.
US = 1_000_000
HIGHEST_US = 3600 * US
SIGNIFICANT_FIGURES = 3
# nginx closes a keep-alive connection idle for 75 s (its default): never reuse one near that.
IDLE_REUSE_S = 30.0
EXIT_MEANING = {0: "pass", 1: "errors", 2: "usage", 3: "threshold breached"}


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, HIGHEST_US, SIGNIFICANT_FIGURES)


def schedule(rate: float, seconds: float) -> list[float]:
    """Offsets (s) of the arrivals from the start: evenly spaced at `rate` per second."""
    if rate <= 0 or seconds <= 0:
        raise ValueError("rate and duration must be positive")
    return [i / rate for i in range(max(1, round(rate * seconds)))]


class RequestFailed(Exception):
    """An answer that is not what the scenario expects (status, body): a failure."""


@dataclass
class Recorder:
    """Every latency (from when it was due) by name, the failures, the generator's send lag."""

    histograms: dict[str, HdrHistogram] = field(default_factory=dict)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    lag: HdrHistogram = field(default_factory=new_histogram)
    waited_for_connection: int = 0
    sent: int = 0
    first_sent: float | None = None
    last_sent: float | None = None
    # The scheduled second -> [arrivals, slowest flow/arrival latency in us]
    timeline: dict[int, list[int]] = field(default_factory=dict)

    def histogram(self, name: str) -> HdrHistogram:
        if name not in self.histograms:
            self.histograms[name] = new_histogram()
        return self.histograms[name]

    def record(self, name: str, seconds: float) -> None:
        self.histogram(name).record_value(min(HIGHEST_US, max(1, round(seconds * US))))

    def fail(self, name: str, reason: str) -> None:
        self.histogram(name)  # a name that only failed still has its row
        self.failures[name] += 1
        self.reasons[f"{name}: {reason}"] += 1

    def sending(self, scheduled: float, now: float, waited: bool) -> None:
        self.lag.record_value(min(HIGHEST_US, max(1, round((now - scheduled) * US))))
        self.waited_for_connection += waited
        self.sent += 1
        self.first_sent = now if self.first_sent is None else self.first_sent
        self.last_sent = now

    def arrival_done(self, second: int, seconds: float) -> None:
        row = self.timeline.setdefault(second, [0, 0])
        row[0] += 1
        row[1] = max(row[1], round(seconds * US))

    def requests(self) -> tuple[int, int]:
        """(requests, failures) over the request names, flows left out."""
        names = [n for n in self.histograms if n != FLOW]
        failed = sum(self.failures[n] for n in names)
        return sum(self.histograms[n].get_total_count() for n in names) + failed, failed

    def percentiles(self, name: str) -> dict[str, float]:
        """label (p50 ... max) -> ms, of the successes of that name; {} if none."""
        hist = self.histograms.get(name)
        if hist is None or hist.get_total_count() == 0:
            return {}
        out = {}
        for _, label, percent in loadcheck.OPEN_PERCENTILES:
            at = hist.get_max_value() if percent >= 100 else hist.get_value_at_percentile(percent)
            out[label] = at / 1000
        return out

    def open_run(self) -> loadcheck.OpenRun:
        requests, failures = self.requests()
        names = {name: self.percentiles(name) for name in self.histograms}
        lag_p99 = self.lag.get_value_at_percentile(99) / 1000 if self.lag.get_total_count() else 0
        return loadcheck.OpenRun(requests, failures, lag_p99, {k: v for k, v in names.items() if v})


# --- HTTP/1.1 over asyncio streams, h11 for the protocol --------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.http = h11.Connection(h11.CLIENT)
        self.idle_since = time.monotonic()

    def close(self) -> None:
        self.writer.close()

    async def exchange(
        self, method: str, host: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[Answer, bool]:
        """One request and its whole answer; whether the connection can carry another."""
        fields = [("Host", host), ("User-Agent", "openload"), *headers.items()]
        if body is not None:
            fields += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        data = self.http.send(h11.Request(method=method, target=path, headers=fields)) or b""
        if body:
            data += self.http.send(h11.Data(data=body)) or b""
        data += self.http.send(h11.EndOfMessage()) or b""
        self.writer.write(data)
        await self.writer.drain()
        status, head, chunks = 0, {}, []
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                self.http.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                head = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection")
        reusable = self.http.our_state is h11.DONE and self.http.their_state is h11.DONE
        if reusable:
            self.http.start_next_cycle()
            self.idle_since = time.monotonic()
        return Answer(status, head, b"".join(chunks)), reusable


class Client:
    """At most `limit` connections, kept alive between arrivals (the most recent idle first)."""

    def __init__(self, url: str, context: ssl.SSLContext | None, limit: int, timeout: float):
        parts = urlsplit(url)
        self.hostname = parts.hostname or ""
        self.https = parts.scheme == "https"
        self.port = parts.port or (443 if self.https else 80)
        self.host_header = parts.netloc
        self.context = context if self.https else None
        self.timeout = timeout
        self.slots = asyncio.Semaphore(limit)
        self.idle: list[Connection] = []
        self.opened = 0

    async def connection(self) -> Connection:
        while self.idle:
            conn = self.idle.pop()
            if time.monotonic() - conn.idle_since < IDLE_REUSE_S:
                return conn
            conn.close()
        reader, writer = await asyncio.open_connection(
            self.hostname,
            self.port,
            ssl=self.context,
            server_hostname=self.hostname if self.context else None,
        )
        self.opened += 1
        return Connection(reader, writer)

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class Session:
    """One arrival's connection (taken from the client's, given back at the end) and its
    requests, each recorded from when it was due."""

    def __init__(self, client: Client, recorder: Recorder, due: float) -> None:
        self.client, self.recorder, self.due = client, recorder, due
        self.conn: Connection | None = None

    async def request(
        self,
        method: str,
        path: str,
        expect: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        check: Callable[[Answer], str | None] | None = None,
    ) -> Answer:
        """The answer, recorded as a success if it has the expected status and `check` finds
        nothing wrong with it (its reason otherwise), else a failure (RequestFailed)."""
        name = group_name(path)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.client.timeout):
                if self.conn is None:
                    self.conn = await self.client.connection()
                payload = None if body is None else json.dumps(body).encode()
                answer, reusable = await self.conn.exchange(
                    method, self.client.host_header, path, payload, headers or {}
                )
        except (OSError, TimeoutError, h11.ProtocolError, ssl.SSLError) as exc:
            self.drop()
            reason = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            self.recorder.fail(name, f"{reason}: {exc}"[:120] if str(exc) else reason)
            raise RequestFailed(reason) from None
        if not reusable:
            self.drop()
        wrong = f"expected {expect}, got {answer.status}" if answer.status != expect else None
        if wrong is None and check is not None:
            wrong = check(answer)
        if wrong is not None:
            self.recorder.fail(name, wrong)
            raise RequestFailed(wrong)
        now = loop.time()
        self.recorder.record(name, now - self.due)
        self.due = now  # the next request of the arrival is due at once
        return answer

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def give_back(self) -> None:
        if self.conn is not None:
            self.client.idle.append(self.conn)
            self.conn = None


async def light(session: Session, _secret: str) -> None:
    await session.request("GET", "/healthz", 200)


def json_object(answer: Answer) -> dict[str, Any]:
    try:
        body = json.loads(answer.body)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def created_ok(answer: Answer) -> str | None:
    missing = CREATED_KEYS - set(json_object(answer))
    return f"201 without {sorted(missing)} (the oracle secret?)" if missing else None


def png_ok(answer: Answer) -> str | None:
    return None if answer.body.startswith(PNG_MAGIC) else "200 whose body is not a PNG"


def valid_ok(answer: Answer) -> str | None:
    valid = json_object(answer).get("valid")
    return None if valid is True else f"valid is {valid!r} for the right answer"


async def flow(session: Session, secret: str) -> None:
    oracle = {ORACLE_HEADER: secret}
    created = await session.request("POST", "/api/captchas", 201, {}, oracle, created_ok)
    captcha = json_object(created)
    await session.request("GET", captcha["image_url"], 200, check=png_ok)
    answer = {"answer": captcha["answer"]}
    await session.request("POST", captcha["verify_url"], 200, answer, oracle, valid_ok)


Scenario = Callable[[Session, str], Awaitable[None]]
SCENARIO_FUNCTIONS: dict[str, Scenario] = {"flow": flow, "light": light}


async def arrival(
    scenario: Scenario, client: Client, recorder: Recorder, scheduled: float, start: float,
    secret: str,
) -> None:  # fmt: skip
    """One arrival: its latency from its scheduled time, whatever held it (a connection slot,
    the event loop) before it was sent."""
    loop = asyncio.get_running_loop()
    waited = client.slots.locked()
    async with client.slots:
        recorder.sending(scheduled, loop.time(), waited)
        session = Session(client, recorder, scheduled)
        try:
            await scenario(session, secret)
        except RequestFailed:
            session.drop()
            if scenario is flow:
                recorder.failures[FLOW] += 1
                recorder.histogram(FLOW)
            return
        finally:
            recorder.arrival_done(int(scheduled - start), loop.time() - scheduled)
        session.give_back()
        if scenario is flow:
            recorder.record(FLOW, loop.time() - scheduled)


async def generate(
    scenario: Scenario,
    client: Client,
    recorder: Recorder,
    offsets: list[float],
    secret: str = "",
    stop: asyncio.Event | None = None,
    drain_s: float | None = None,
) -> float:
    """Start each arrival at its scheduled time, never waiting for the earlier ones; then wait
    for those still running (at most drain_s, default the client's timeout and 5 s: a request
    that hangs fails by its own timeout first, and counts). Returns the start time on the loop's
    clock."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    start = loop.time() + 0.05
    for offset in offsets:
        scheduled = start + offset
        delay = scheduled - loop.time()
        # Behind schedule (delay <= 0): no wait, but the running arrivals still get to move.
        await asyncio.sleep(max(0.0, delay))
        if stop.is_set():
            break
        task = asyncio.create_task(arrival(scenario, client, recorder, scheduled, start, secret))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, pending = await asyncio.wait(
            set(tasks), timeout=client.timeout + 5 if drain_s is None else drain_s
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    client.close()
    return start


# --- the report ------------------------------------------------------------------------------


def figures_table(recorder: Recorder) -> str:
    labels = [label for _, label, _ in loadcheck.OPEN_PERCENTILES]
    names = sorted(recorder.histograms, key=lambda n: (n != FLOW, n))
    width = max([len(n) for n in names] + [len("name")])
    lines = [
        f"  {'name':<{width}}  {'count':>6}  {'failed':>6}  "
        + "  ".join(f"{label:>8}" for label in labels)
        + "  (ms, from the scheduled time)"
    ]
    for name in names:
        count = recorder.histograms[name].get_total_count()
        figures = recorder.percentiles(name)
        cells = "  ".join(f"{figures[label]:>8.1f}" if figures else f"{'-':>8}" for label in labels)
        lines.append(f"  {name:<{width}}  {count:>6}  {recorder.failures[name]:>6}  {cells}")
    return "\n".join(lines)


def rate_line(recorder: Recorder, rate: float, scheduled: int) -> str:
    span = (recorder.last_sent or 0) - (recorder.first_sent or 0)
    achieved = (recorder.sent - 1) / span if recorder.sent > 1 and span > 0 else 0.0
    lag = recorder.lag
    lag_text = (
        f"p50 {lag.get_value_at_percentile(50) / 1000:.1f} ms,"
        f" p99 {lag.get_value_at_percentile(99) / 1000:.1f} ms,"
        f" max {lag.get_max_value() / 1000:.1f} ms"
        if lag.get_total_count()
        else "none"
    )
    waited = (
        f"; {recorder.waited_for_connection} waited for a free connection (--max-connections)"
        if recorder.waited_for_connection
        else ""
    )
    return (
        f"  rate: scheduled {rate:g}/s, achieved {achieved:.2f}/s"
        f" ({recorder.sent} of {scheduled} arrivals sent); send lag {lag_text}{waited}"
    )


def summary(
    args: argparse.Namespace, url: str, recorder: Recorder, checks: list[loadcheck.Check],
    code: int, scheduled: int, thresholds: loadcheck.OpenThresholds,
) -> dict[str, Any]:  # fmt: skip
    requests, failures = recorder.requests()
    return {
        "tool": "openload",
        "scenario": args.scenario,
        "host": url,
        "rate": args.rate,
        "duration_s": args.seconds,
        "scheduled": scheduled,
        "sent": recorder.sent,
        "connections_opened": args.connections_opened,
        "requests": requests,
        "failures": failures,
        "send_lag_ms": {
            "p50": recorder.lag.get_value_at_percentile(50) / 1000,
            "p99": recorder.lag.get_value_at_percentile(99) / 1000,
            "max": recorder.lag.get_max_value() / 1000,
            "waited_for_connection": recorder.waited_for_connection,
        },
        "names": {
            name: {
                "count": hist.get_total_count(),
                "failures": recorder.failures[name],
                "ms": recorder.percentiles(name),
                "hdr": hist.encode().decode() if hist.get_total_count() else "",
            }
            for name, hist in sorted(recorder.histograms.items())
        },
        "failure_reasons": dict(recorder.reasons.most_common(20)),
        "timeline": [
            {"second": s, "arrivals": row[0], "slowest_ms": row[1] / 1000}
            for s, row in sorted(recorder.timeline.items())
        ],
        "thresholds": thresholds.source,
        "checks": [vars(check) for check in checks],
        "exit_code": code,
    }


# --- the command -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=SCENARIOS, default="flow")
    parser.add_argument("--rate", type=float, default=20.0, help="arrivals per second")
    parser.add_argument("--duration", default="30s", help="e.g. 30s, 2m (default 30s)")
    parser.add_argument("--host", help="base URL (default: the local VM over https)")
    parser.add_argument("--ca-file", help=f"CA to verify --host against (${target.CA_ENV} wins)")
    parser.add_argument("--oracle-secret-file", help=f"default: ${runner.ORACLE_ENV}, or the VM's")
    parser.add_argument(
        "--thresholds",
        default=os.environ.get("LOCUST_THRESHOLDS", str(runner.DEFAULT_THRESHOLDS)),
        help="thresholds file, its [open] tables (default: $LOCUST_THRESHOLDS or"
        " loadtests/thresholds.toml)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=256,
        help="connections open at once; an arrival that finds none free waits (send lag)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--reports-root", type=Path, default=runner.REPORTS)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.max_connections < 1 or args.timeout <= 0:
        parser.error("--rate, --max-connections and --timeout must be positive")
    try:
        args.seconds = parse_duration(args.duration)
    except ValueError as exc:
        parser.error(str(exc))
    if args.seconds <= 0:
        parser.error("--duration must be positive")
    if args.oracle_secret_file:
        args.oracle_secret_file = str(Path(args.oracle_secret_file).resolve())
    return args


def oracle_secret(args: argparse.Namespace) -> str:
    secret = os.environ.get(runner.ORACLE_ENV, "").strip()
    if not secret and args.oracle_secret_file:
        try:
            secret = Path(args.oracle_secret_file).read_text().strip()
        except OSError:
            return ""
    return secret


async def run_load(
    args: argparse.Namespace, url: str, context: ssl.SSLContext | None, secret: str
) -> tuple[Recorder, int]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    recorder = Recorder()
    client = Client(url, context, args.max_connections, args.timeout)
    offsets = schedule(args.rate, args.seconds)
    await generate(SCENARIO_FUNCTIONS[args.scenario], client, recorder, offsets, secret, stop)
    args.connections_opened = client.opened
    return recorder, len(offsets)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        thresholds = loadcheck.load_open_thresholds(args.thresholds, args.scenario)
    except loadcheck.ThresholdsError as exc:
        print(f"openload: {exc}", file=sys.stderr)
        return 2
    host = runner.resolve_host_and_secret(args)
    context = None
    if host.https:
        try:
            target.check_certificate(host.url, host.ca_file)
        except target.TargetError as exc:
            print(f"openload: {exc}", file=sys.stderr)
            return 2
        context = target.ssl_context(host.ca_file)
    secret = oracle_secret(args)
    if args.scenario == "flow" and not secret:
        print(
            f"openload: no oracle secret: set {runner.ORACLE_ENV} or --oracle-secret-file"
            " (the flow verifies with the right answer)",
            file=sys.stderr,
        )
        return 2
    report_dir = runner.new_report_dir(args.reports_root, f"open-{args.scenario}")
    print(
        f"openload: {args.scenario} against {host.url} ({host.what}), {args.rate:g} arrivals/s"
        f" for {args.seconds} s, open model: latencies from each arrival's scheduled time",
        flush=True,
    )
    if host.https:
        print(f"openload: certificate verified against {host.ca_file or 'the system store'}")
    started = time.monotonic()
    recorder, scheduled = asyncio.run(run_load(args, host.url, context, secret))
    print(f"openload: done in {time.monotonic() - started:.1f} s")
    print(figures_table(recorder))
    print(rate_line(recorder, args.rate, scheduled))
    for reason, count in recorder.reasons.most_common(5):
        print(f"  failed {count}x {reason}")
    checks = loadcheck.evaluate_open(thresholds, recorder.open_run())
    code = loadcheck.open_exit_code(checks)
    if recorder.sent == 0:
        code = loadcheck.EXIT_ERROR
    error = (
        "the generator fell behind its schedule: the tail is partly its own"
        if recorder.sent
        else "nothing was sent"
    )
    if any(c.label == loadcheck.SEND_LAG_LABEL and c.status == "FAIL" for c in checks):
        print("  WARNING: sends fell behind schedule (see the send lag): the figures are not"
              " the server's alone")  # fmt: skip
    print(loadcheck.verdict_table(thresholds, checks, code, error=error))
    report_dir.mkdir(parents=True, exist_ok=True)
    result = summary(args, host.url, recorder, checks, code, scheduled, thresholds)
    (report_dir / "summary.json").write_text(json.dumps(result, indent=2))
    print(f"openload: exit {code} ({EXIT_MEANING.get(code, '?')}); reports in {report_dir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
