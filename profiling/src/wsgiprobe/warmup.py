"""Warm up every current worker of the app server: ``python -m wsgiprobe.warmup``.

    python -m wsgiprobe.warmup --url http://127.0.0.1/lazyinit \\
        [--uwsgi-stats /run/app/stats.sock | --gunicorn-record /run/app-private/workers.json] \\
        [--concurrency K] [--tries T] [--deadline SECONDS] [--host-header NAME] [--release ID]

The workers (index, pid) and how many there should be come from the server itself, through
``wsgiprobe.discovery`` (without a source option: whichever server the app's env names runs).
They are read again before every wave: a worker respawned during the warm-up is a new pid,
and cold.

Why not sequential requests until every worker answered: on an idle server the kernel hands
most connections to the same idle worker, so some workers may never see one. A busy worker
gets none, though: the warm-up keeps the warm workers busy while it reaches for the cold ones.

The algorithm, in waves (each wave's requests are sent at once; the next wave starts when all
of its requests have answered):

1. Wave size = busy-able workers x width + K, capped by the workers listed, 64 and the tries
   left (busy-able: warm, or cold after a failed init). Every request asks
   ``/lazyinit?hold=H``: a warm worker keeps it open H ms (a cold one never holds), so while
   the warm ones are held the other requests must go to cold workers. At most K of those can
   initialise at once: the app enforces it across its workers (slot locks), and a cold worker
   without a slot answers ``busy`` at once.
2. H starts at 0 and grows (20, 50, 100, 200, 500, 1000 ms) only after a wave in which no
   worker got warm and the answers came from warm (or failing) workers: under live traffic
   the workers are busy anyway and the warm-up holds nothing; on an idle server it settles
   where requests spread. H never shrinks: what needed it lasts the whole run. Past 200 ms
   without progress the width grows too (threaded workers take a held request and still
   accept more).
3. A wave whose answers were ``busy`` (another worker initialising) or failed to connect
   waits a little before the next one instead of growing H.
4. Done when every listed worker (and as many as the server should have) has answered warm
   (with ``--release ID``: warm and running that release; a worker still on another one is
   ``old``, and the warm-up waits for the server to replace it, as a reload does).
   Bounded by the tries (requests sent) and the deadline; it gives up early when every cold
   worker has failed its init ``MAX_FAILURES`` times, or when a worker has and no worker got
   warm for ``STALL_WAVES`` waves (a failing init usually fails everywhere: say so quickly).

Output: one line per newly warm worker on stderr, a per-worker table on stdout, and a last
stderr line that sums it up. Exit 0: every worker warm; 1: some stayed cold (named, with their
init errors); 2: bad usage or the workers cannot be found.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from wsgiprobe.discovery import Discovery, DiscoveryError, add_source_arguments
from wsgiprobe.discovery import discover as find_server

HOLDS_MS = (0, 20, 50, 100, 200, 500, 1000)
WIDEN_FROM_MS = 200
MAX_IN_FLIGHT = 64
MAX_FAILURES = 3
STALL_WAVES = 2 * MAX_FAILURES

EXIT_OK, EXIT_COLD, EXIT_USAGE = 0, 1, 2


# -- the requests ------------------------------------------------------------------------------


@dataclass
class Answer:
    pid: int | None = None
    index: int | None = None
    warm: bool = False
    busy: bool = False
    ran: list[str] = field(default_factory=list)
    init_seconds: float | None = None
    failure: str | None = None  # init_failed: the worker's message
    error: str | None = None  # no usable answer (connection, proxy error page, ...)
    release: str | None = None


class Client:
    def __init__(self, url: str, host_header: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--url must be an http:// URL, got {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port
        self.host_header = host_header or parts.netloc
        self.target = (parts.path or "/") + ("?" + parts.query if parts.query else "")

    def get(self, hold_ms: int, timeout: float) -> Answer:
        target = self.target
        if hold_ms:
            target += ("&" if "?" in target else "?") + f"hold={hold_ms}"
        connection_class = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        connection = connection_class(self.host, self.port, timeout=timeout)
        headers = {
            "Host": self.host_header,
            "Accept": "application/json",
            "Connection": "close",  # a new connection each time: the server picks a worker
            "User-Agent": "wsgiprobe-warmup",
        }
        try:
            connection.request("GET", target, headers=headers)
            response = connection.getresponse()
            status, body = response.status, response.read(1024 * 1024)
        except (OSError, http.client.HTTPException) as error:
            return Answer(error=f"{type(error).__name__}: {error}".rstrip(": "))
        finally:
            connection.close()
        return parse_answer(status, body)


def parse_answer(status: int, body: bytes) -> Answer:
    try:
        data = json.loads(body)
    except ValueError:
        snippet = body[:60].decode("utf-8", "replace").strip()
        return Answer(error=f"HTTP {status}, not JSON: {snippet!r}")
    if not isinstance(data, dict):
        return Answer(error=f"HTTP {status}, unexpected JSON")
    pid = data.get("pid") if isinstance(data.get("pid"), int) else None
    index = data.get("worker") if isinstance(data.get("worker"), int) else None
    if status == 500 and data.get("error") == "init_failed" and pid is not None:
        return Answer(pid=pid, index=index, failure=str(data.get("message")))
    if status != 200 or pid is None or "warm" not in data:
        return Answer(error=f"HTTP {status}: {data.get('error')}: {data.get('message')}")
    seconds = data.get("init_seconds")
    return Answer(
        pid=pid,
        index=index,
        warm=data["warm"] is True,
        busy=data.get("busy") is True,
        ran=[str(name) for name in data.get("ran") or []],
        init_seconds=float(seconds) if isinstance(seconds, int | float) else None,
        release=data["release"] if isinstance(data.get("release"), str) else None,
    )


def _seconds(value: float | None, missing: str) -> str:
    return f"{value:.3f}" if value is not None else missing


# -- the warm-up -------------------------------------------------------------------------------


@dataclass
class WorkerResult:
    index: int | None
    pid: int
    warm: bool = False
    init_seconds: float | None = None
    requests: int = 0
    failures: int = 0
    error: str | None = None  # the last init failure
    old_release: str | None = None  # warm, but running another release than the one wanted

    @property
    def state(self) -> str:
        if self.warm:
            return "warm"
        if self.old_release is not None:
            return "old"
        return "failed" if self.error else "cold"

    def label(self) -> str:
        return f"worker {self.index if self.index is not None else '?'} (pid {self.pid})"


@dataclass
class Result:
    server: str
    workers: list[WorkerResult]  # the current workers at the end, by index
    expected: int
    ok: bool
    tries: int
    seconds: float
    waves: int
    max_hold_ms: int
    problems: list[str]
    release: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_COLD

    @property
    def cold(self) -> list[WorkerResult]:
        return [worker for worker in self.workers if not worker.warm]

    def table(self) -> str:
        lines = [f"{'worker':>6}  {'pid':>8}  {'state':<6}  {'init_s':>8}  {'requests':>8}"]
        for worker in self.workers:
            index = worker.index if worker.index is not None else "?"
            seconds = _seconds(worker.init_seconds, "-")
            state, requests = worker.state, worker.requests
            lines.append(f"{index:>6}  {worker.pid:>8}  {state:<6}  {seconds:>8}  {requests:>8}")
        return "\n".join(lines)

    def summary(self) -> str:
        done = f"{self.tries} requests, {self.waves} waves, {self.seconds:.1f} s"
        done += f", hold up to {self.max_hold_ms} ms"
        if self.ok:
            on = f" on release {self.release}" if self.release else ""
            return f"all {len(self.workers)} {self.server} workers warm{on} ({done})"
        parts = []
        old = [w for w in self.cold if w.old_release is not None]
        cold = [w for w in self.cold if w.old_release is None]
        if cold:
            parts.append("cold: " + ", ".join(worker.label() for worker in cold))
        if old:
            parts.append(
                f"not on release {self.release}: "
                + ", ".join(f"{w.label()} runs {w.old_release}" for w in old)
            )
        if len(self.workers) < self.expected:
            parts.append(f"the server lists {len(self.workers)} of its {self.expected} workers")
        failed = [w for w in self.cold if w.error]
        if failed:
            parts.append("; ".join(f"init_failed on {w.label()}: {w.error}" for w in failed))
        return "warm-up failed: " + "; ".join(parts + self.problems[-1:]) + f" ({done})"


def warm_up(
    url: str,
    *,
    uwsgi_stats: str | None = None,
    gunicorn_record: str | None = None,
    discover: Callable[[], Discovery] | None = None,
    concurrency: int = 1,
    tries: int = 500,
    deadline: float = 120.0,
    host_header: str | None = None,
    discovery_wait: float = 5.0,
    progress: Callable[[str], None] | None = None,
    release: str | None = None,
) -> Result:
    """Warm every current worker; raises DiscoveryError when the workers cannot be found.

    The workers come from ``discover`` (tests pass their own), else from the source given,
    else from the app's env (``wsgiprobe.discovery``)."""
    if discover is None:
        if uwsgi_stats is not None and gunicorn_record is not None:
            raise ValueError("give at most one of uwsgi_stats and gunicorn_record")
        discover = functools.partial(find_server, uwsgi_stats, gunicorn_record)
    if concurrency < 1 or tries < 1 or deadline <= 0:
        raise ValueError("concurrency and tries must be >= 1, deadline > 0")
    client = Client(url, host_header)
    say = progress or (lambda line: None)
    return _WarmUp(
        client, discover, concurrency, tries, deadline, discovery_wait, say, release
    ).run()


class _WarmUp:
    def __init__(
        self,
        client: Client,
        discover: Callable[[], Discovery],
        concurrency: int,
        tries: int,
        deadline: float,
        discovery_wait: float,
        say: Callable[[str], None],
        release: str | None = None,
    ) -> None:
        self.client = client
        self.discover = discover
        self.concurrency = concurrency
        self.tries = tries
        self.start = time.monotonic()
        self.deadline = self.start + deadline
        self.discovery_wait = discovery_wait
        self.say = say
        self.tracks: dict[int, WorkerResult] = {}  # by pid: pids are unique at any one time
        self.problems: list[str] = []
        self.sent = 0
        self.waves = 0
        self.level = 0  # index into HOLDS_MS
        self.width = 1
        self.stall = 0  # waves in a row in which no worker got warm
        self.listed: set[int] = set()  # every pid the server has listed during the run
        self.release = release  # the release every worker must run, if any

    def run(self) -> Result:
        discovery = self._first_discovery()
        self.say(
            f"warming {discovery.expected} {discovery.server} workers via {self.client.target} "
            f"(at most {self.concurrency} initialising at once)"
        )
        pause = 0.0
        with ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT) as pool:
            while True:
                current = self._current(discovery)
                cold = [w for w in current if not w.warm]
                if not cold and len(current) >= discovery.expected:
                    return self._result(discovery, ok=True)
                if self.sent >= self.tries or time.monotonic() >= self.deadline:
                    return self._result(discovery, ok=False)
                failing = [w for w in cold if w.failures >= MAX_FAILURES]
                if failing and (len(failing) == len(cold) or self.stall >= STALL_WAVES):
                    return self._result(discovery, ok=False)
                if pause:
                    time.sleep(min(pause, max(0.0, self.deadline - time.monotonic())))
                pause = self._wave(pool, current) if current else 0.2
                discovery = self._rediscover(discovery)

    def _wave(self, pool: ThreadPoolExecutor, current: list[WorkerResult]) -> float:
        """Send one wave; return how long to wait before the next."""
        # Busy-able: they answer at once, or hold (a worker on an old release is warm too).
        warm = sum(1 for w in current if w.warm or w.failures or w.old_release is not None)
        size = min(warm * self.width + self.concurrency, len(current), MAX_IN_FLIGHT)
        size = max(1, min(size, self.tries - self.sent))
        hold = HOLDS_MS[self.level]
        timeout = max(1.0, self.deadline - time.monotonic())
        answers = list(pool.map(lambda _: self.client.get(hold, timeout), range(size)))
        self.sent += size
        self.waves += 1

        newly_warm = busy = errors = 0
        for answer in answers:
            if answer.error is not None or answer.pid is None:
                errors += 1
                self._problem(f"no usable answer: {answer.error}")
                continue
            track = self.tracks.get(answer.pid)
            if track is None:
                track = self.tracks[answer.pid] = WorkerResult(answer.index, answer.pid)
            track.requests += 1
            if answer.failure is not None:
                track.failures += 1
                track.error = answer.failure
                self.say(f"init_failed: {track.label()}: {answer.failure}")
            elif answer.warm and self.release is not None and answer.release != self.release:
                if track.old_release is None:
                    self.say(f"old: {track.label()} runs release {answer.release}")
                track.old_release = answer.release or "unknown"
            elif answer.warm:
                if not track.warm:
                    newly_warm += 1
                    track.warm, track.init_seconds = True, answer.init_seconds
                    how = "initialised" if answer.ran else "already warm"
                    took = _seconds(answer.init_seconds, "?")
                    self.say(f"warm: {track.label()}, init {took} s ({how})")
            else:
                track.warm = False
                busy += answer.busy
        if newly_warm:
            self.stall = 0
            return 0.0
        self.stall += 1
        if busy or errors == len(answers):
            # Someone else holds the init slots, or the server is not answering (restarting):
            # holding the warm workers longer would not help.
            return 0.05 if busy else 0.25
        # The answers came from warm (or failing) workers: keep them busy longer, then wider.
        if self.level + 1 < len(HOLDS_MS):
            self.level += 1
        if HOLDS_MS[self.level] >= WIDEN_FROM_MS and warm * (self.width + 1) < MAX_IN_FLIGHT:
            self.width += 1
        return 0.0

    def _current(self, discovery: Discovery) -> list[WorkerResult]:
        # A worker that just died may still be listed (a warm one would end the warm-up before
        # its replacement shows up).
        current = []
        for worker in discovery.live_workers():
            track = self.tracks.get(worker.pid)
            if track is None:
                track = self.tracks[worker.pid] = WorkerResult(worker.index, worker.pid)
            track.index = worker.index if worker.index is not None else track.index
            current.append(track)
        self.listed.update(worker.pid for worker in discovery.workers)
        return current

    def _first_discovery(self) -> Discovery:
        # Right after a (re)start the server may not have written its record or socket yet.
        give_up = min(self.deadline, self.start + self.discovery_wait)
        while True:
            try:
                return self.discover()
            except DiscoveryError:
                if time.monotonic() >= give_up:
                    raise
            time.sleep(0.2)

    def _rediscover(self, previous: Discovery) -> Discovery:
        try:
            return self.discover()
        except DiscoveryError as error:
            self._problem(f"re-discovery failed, kept the last list: {error}")
            return previous

    def _problem(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)

    def _result(self, discovery: Discovery, ok: bool) -> Result:
        current = sorted(
            self._current(discovery),
            key=lambda w: (w.index is None, w.index or 0, w.pid),
        )
        problems = list(self.problems)
        strangers = sorted(pid for pid in self.tracks if pid not in self.listed)
        if strangers and not ok:
            problems.append(f"answers came from pids the server does not list: {strangers}")
        return Result(
            server=discovery.server,
            workers=current,
            expected=discovery.expected,
            ok=ok,
            tries=self.sent,
            seconds=time.monotonic() - self.start,
            waves=self.waves,
            max_hold_ms=HOLDS_MS[self.level],
            problems=problems,
            release=self.release,
        )


# -- the command -------------------------------------------------------------------------------


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {raw}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wsgiprobe.warmup",
        description="Warm up every current worker of the app server through GET /lazyinit.",
    )
    parser.add_argument("--url", required=True, help="the /lazyinit URL (loopback, via nginx)")
    add_source_arguments(parser)
    parser.add_argument(
        "--concurrency",
        type=_positive(int),
        default=1,
        metavar="K",
        help="most workers initialising at once (default 1)",
    )
    parser.add_argument(
        "--tries",
        type=_positive(int),
        default=500,
        metavar="T",
        help="most requests in all (default 500)",
    )
    parser.add_argument(
        "--deadline",
        type=_positive(float),
        default=120.0,
        metavar="SECONDS",
        help="give up after this long (default 120)",
    )
    parser.add_argument("--host-header", metavar="NAME", help="Host header to send")
    parser.add_argument(
        "--release", metavar="ID", help="every worker must run this release (after a reload)"
    )
    parser.add_argument(
        "--discovery-wait",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="wait so long for the server's workers to appear (default 5)",
    )
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        result = warm_up(
            args.url,
            uwsgi_stats=args.uwsgi_stats,
            gunicorn_record=args.gunicorn_record,
            concurrency=args.concurrency,
            tries=args.tries,
            deadline=args.deadline,
            host_header=args.host_header,
            discovery_wait=max(0.0, args.discovery_wait),
            progress=say,
            release=args.release,
        )
    except (DiscoveryError, ValueError) as error:
        say(f"warm-up: {error}")
        return EXIT_USAGE
    print(result.table(), flush=True)
    say(result.summary())
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
