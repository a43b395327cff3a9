"""Which app server runs, its workers, and which pid is worker N: ``python -m wsgiprobe.discovery``.

    python -m wsgiprobe.discovery [--uwsgi-stats PATH|HOST:PORT | --gunicorn-record PATH]
                                  [--json | --worker N]

The one place the toolkit asks the server itself (``wsgiprobe.workers`` answers "which worker
am I" inside a worker). Two sources, both named in the app's env file (``run-with-env``):

- uWSGI's stats server, ``WSGIPROBE_UWSGI_STATS`` (a unix socket path or host:port; it dumps
  one JSON document on connect; a file holding such a dump is read too);
- the worker record ``wsgiprobe.gunicorn_hooks`` keeps, ``WSGIPROBE_WORKERS_FILE``.

Given neither, ``discover`` tries both: uWSGI first, because a stats socket that answers proves
uWSGI runs now, while a record proves only that a process with its master's pid exists. A
stopped uWSGI's socket file refuses connections, and ``on_exit`` removes gunicorn's record, so
what a stopped server leaves behind is never taken for a running one.

Output: ``server NAME``, ``master PID``, then ``worker INDEX PID`` lines (``--json``: one
object; ``--worker N``: that worker's pid alone). Exit 2 when the server cannot be found.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from wsgiprobe.gunicorn_hooks import RECORD_ENV
from wsgiprobe.workers import pid_alive

STATS_ENV = "WSGIPROBE_UWSGI_STATS"
MAX_STATS_BYTES = 16 * 1024 * 1024  # a stats dump is ~2 KB a worker: this is a broken peer
EXIT_OK, EXIT_NOT_FOUND = 0, 2
_HOST_PORT = re.compile(r"\[?[^\s/]*?\]?:[0-9]+")


class DiscoveryError(Exception):
    """The app server or the worker asked for cannot be found."""


@dataclass(frozen=True)
class Worker:
    index: int | None  # 1..N (uWSGI's id, the gunicorn slot); None if the source gave none
    pid: int
    status: str | None = None  # uWSGI's idle/busy/...; the record keeps none
    requests: int | None = None  # served since the worker started (uWSGI)
    respawns: int | None = None  # uWSGI's respawn_count


@dataclass(frozen=True)
class Discovery:
    server: str  # "uwsgi" or "gunicorn"
    workers: tuple[Worker, ...]  # running ones (a pid), in the server's order
    expected: int  # how many the server runs when none is being respawned
    master_pid: int | None = None

    def live_workers(self) -> list[Worker]:
        """The workers whose pid exists, when this host's pids are the server's: a worker that
        just died may still be listed until the master notices."""
        if self.master_pid is None or not pid_alive(self.master_pid):
            return list(self.workers)
        return [worker for worker in self.workers if pid_alive(worker.pid)]

    def worker_pid(self, index: int) -> int:
        """Worker ``index``'s pid: one that is safe to signal on this host."""
        name = "uWSGI" if self.server == "uwsgi" else "gunicorn"
        for worker in self.workers:
            if worker.index == index:
                # The record may lag a respawn (uWSGI's stats come from the master, live): a
                # pid that is no child of the master may belong to anyone now.
                master = self.master_pid
                if self.server == "gunicorn" and parent_pid(worker.pid) != master:
                    raise DiscoveryError(
                        f"gunicorn worker {index} pid {worker.pid} is not a child of master"
                        f" {master} (respawned since?): try again"
                    )
                return worker.pid
        if 1 <= index <= self.expected:
            raise DiscoveryError(f"{name} worker {index} is not running (being respawned?)")
        indexes = [worker.index for worker in self.workers]
        raise DiscoveryError(f"{name} has no worker {index} (workers: {indexes})")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# -- uWSGI ---------------------------------------------------------------------------------


def parse_uwsgi_stats(raw: bytes | str, source: str = "uWSGI stats") -> Discovery:
    """uWSGI's stats JSON: ``workers`` [{"id", "pid", "status", ...}]; pid 0 = not running."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    start = text.find("{")  # stats-http prefixes HTTP headers
    try:
        data = json.loads(text[max(start, 0) :], strict=False)
    except ValueError as error:
        raise DiscoveryError(f"{source}: not JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("workers"), list):
        raise DiscoveryError(f"{source}: no 'workers' list")
    found: list[Worker] = []
    expected = 0
    for entry in data["workers"]:
        if not isinstance(entry, dict) or entry.get("status") == "cheap":
            continue  # cheaper mode: a worker that is not meant to run now
        expected += 1
        pid = _int(entry.get("pid"))
        if pid is not None and pid > 0:
            status = entry.get("status")
            found.append(
                Worker(
                    _int(entry.get("id")),
                    pid,
                    status if isinstance(status, str) else None,
                    _int(entry.get("requests")),
                    _int(entry.get("respawn_count")),
                )
            )
    return Discovery("uwsgi", tuple(found), expected, _int(data.get("pid")))


def read_uwsgi_stats(address: str, timeout: float = 5.0) -> Discovery:
    """From a unix socket path, HOST:PORT, or a file holding a dump."""
    source = f"uWSGI stats from {address}"
    try:
        if "/" not in address and _HOST_PORT.fullmatch(address):
            host, _, port = address.rpartition(":")
            target = (host.strip("[]") or "127.0.0.1", int(port))
            with socket.create_connection(target, timeout) as sock:
                raw = _read_bounded(sock, source)
        elif not os.path.exists(address):
            raise DiscoveryError(f"uWSGI stats socket {address} does not exist (is uWSGI up?)")
        elif stat.S_ISSOCK(os.stat(address).st_mode):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
                raw = _read_bounded(sock, source)
        else:
            with open(address, "rb") as file:
                raw = file.read(MAX_STATS_BYTES + 1)
            if len(raw) > MAX_STATS_BYTES:
                raise DiscoveryError(f"{source}: more than 16 MB")
    except OSError as error:
        raise DiscoveryError(f"cannot read the uWSGI stats from {address}: {error}") from None
    return parse_uwsgi_stats(raw, source)


def _read_bounded(sock: socket.socket, source: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := sock.recv(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_STATS_BYTES:
            raise DiscoveryError(f"{source}: more than 16 MB")
    return b"".join(chunks)


# -- gunicorn ------------------------------------------------------------------------------


def parse_gunicorn_record(
    raw: bytes | str, check_master: bool = True, source: str = "gunicorn record"
) -> Discovery:
    """The record ``wsgiprobe.gunicorn_hooks`` writes (see there for the format)."""
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise DiscoveryError(f"{source}: not JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("workers"), list):
        raise DiscoveryError(f"{source}: not a gunicorn worker record (no 'workers' list)")
    master = _int(data.get("master_pid"))
    if check_master and not (master is not None and pid_alive(master)):
        raise DiscoveryError(
            f"{source}: its master (pid {data.get('master_pid')}) is not running: stale record"
        )
    found = tuple(
        Worker(_int(entry.get("index")), pid)
        for entry in data["workers"]
        if isinstance(entry, dict) and (pid := _int(entry.get("pid"))) is not None and pid > 0
    )
    expected = _int(data.get("num_workers"))
    return Discovery("gunicorn", found, len(found) if expected is None else expected, master)


def read_gunicorn_record(path: str) -> Discovery:
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except FileNotFoundError:
        raise DiscoveryError(
            f"no gunicorn worker record at {path}: is gunicorn running with "
            f"wsgiprobe.gunicorn_hooks and {RECORD_ENV} set?"
        ) from None
    except OSError as error:
        raise DiscoveryError(f"cannot read the gunicorn record {path}: {error}") from None
    return parse_gunicorn_record(raw, source=f"gunicorn record {path}")


# -- either --------------------------------------------------------------------------------


def discover(
    uwsgi_stats: str | None = None,
    gunicorn_record: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Discovery:
    """The running server and its workers, from the source given, else from the app's env."""
    if uwsgi_stats is not None and gunicorn_record is not None:
        raise ValueError("give at most one of uwsgi_stats and gunicorn_record")
    if uwsgi_stats is not None:
        return read_uwsgi_stats(uwsgi_stats)
    if gunicorn_record is not None:
        return read_gunicorn_record(gunicorn_record)
    stats, record = environ.get(STATS_ENV), environ.get(RECORD_ENV)
    if not stats and not record:
        raise DiscoveryError(
            f"no uWSGI stats socket or gunicorn worker record to read: give one, or run with"
            f" the app's env file ({STATS_ENV}, {RECORD_ENV})"
        )
    failures = []
    for read, where in ((read_uwsgi_stats, stats), (read_gunicorn_record, record)):
        if where:
            try:
                return read(where)
            except DiscoveryError as error:
                failures.append(str(error))
    raise DiscoveryError("no app server found: " + "; ".join(failures))


def which_server(uwsgi_stats: str | None = None, gunicorn_record: str | None = None) -> str:
    """The server that runs now: "uwsgi" or "gunicorn"."""
    return discover(uwsgi_stats, gunicorn_record).server


def workers(uwsgi_stats: str | None = None, gunicorn_record: str | None = None) -> list[Worker]:
    return discover(uwsgi_stats, gunicorn_record).live_workers()


def worker_pid(
    index: int, uwsgi_stats: str | None = None, gunicorn_record: str | None = None
) -> int:
    return discover(uwsgi_stats, gunicorn_record).worker_pid(index)


def parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as file:
            text = file.read()
    except OSError:
        return None
    # comm (2nd field) may hold spaces and parentheses: the fields after the last ')' are safe.
    fields = text.rpartition(")")[2].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


# -- the command ---------------------------------------------------------------------------


def add_source_arguments(parser: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """The source options of the toolkit's commands (the group, for a command's own)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--uwsgi-stats",
        metavar="PATH|HOST:PORT",
        help=f"uWSGI's stats socket, HOST:PORT or a dump (default: ${STATS_ENV})",
    )
    group.add_argument(
        "--gunicorn-record",
        metavar="PATH",
        help=f"wsgiprobe's gunicorn worker record (default: ${RECORD_ENV})",
    )
    return group


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wsgiprobe.discovery",
        description="Print the running app server, its master pid and each worker's index and pid.",
    )
    add_source_arguments(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object")
    output.add_argument("--worker", type=int, metavar="N", help="print worker N's pid alone")
    args = parser.parse_args(argv)
    try:
        found = discover(args.uwsgi_stats, args.gunicorn_record)
        if args.worker is not None:
            print(found.worker_pid(args.worker))
            return EXIT_OK
    except DiscoveryError as error:
        print(f"discovery: {error}", file=sys.stderr)
        return EXIT_NOT_FOUND
    live = found.live_workers()
    if args.json:
        data = {**asdict(found), "workers": [asdict(worker) for worker in live]}
        print(json.dumps(data))
        return EXIT_OK
    print(f"server {found.server}")
    print(f"master {found.master_pid if found.master_pid is not None else '?'}")
    for worker in live:
        print(f"worker {worker.index if worker.index is not None else '?'} {worker.pid}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
