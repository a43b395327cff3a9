"""SIGUSR1 opens a remote pdb session inside the signalled worker (uWSGI or gunicorn).

``kill -USR1 <worker pid>`` (or ``python -m wsgiprobe.pdb_attach``) makes worker N listen on
``WSGIPROBE_PDB_HOST:WSGIPROBE_PDB_BASE_PORT + N`` for one client, up to
``WSGIPROBE_PDB_TIMEOUT`` seconds. The client gets a pdb prompt stopped in the frame the worker
was running when the signal came (not in the handler); ``c`` (also ``q`` or closing the
connection) lets the worker go on with that very request, and the port is closed.

Wiring:

- uWSGI replaces any SIGUSR1 handler set at import or in @postfork with its own (print stats),
  so ``PdbHookMiddleware`` installs ours at each worker's first request. Until a worker has
  served one request, SIGUSR1 still prints stats there (``pdb_attach`` re-sends the signal while
  it waits, for that reason). An idle uWSGI worker blocked in accept() runs the handler at its
  next request: the session then stops in that request's first Python frame.
- gunicorn: call ``gunicorn_post_worker_init(worker)`` from the ``post_worker_init`` hook
  (after gunicorn's own signal setup); it chains to ``worker.handle_usr1`` so log reopening
  still happens, and it keeps the worker's heartbeat going while a session is open, so
  gunicorn's ``timeout`` does not kill a worker a human is inspecting. Call
  ``gunicorn_wrap_master_usr1(server)`` from ``on_starting`` (or ``when_ready``) so that the
  master's SIGUSR1 (log rotation, forwarded to every worker) opens no session anywhere.

Log-rotation marker (gunicorn). Before the master forwards SIGUSR1 to its workers it writes a
marker JSON ``{"master_pid", "seq", "pids", "mono", "wall"}`` (atomic replace) in
``WSGIPROBE_PDB_DIR``, or in a private temp dir made by the master and inherited by the workers
through fork. A worker's SIGUSR1 is a log rotation when the marker was written by its parent,
lists its pid, was written after the worker installed its handler, and either carries a ``seq``
this worker has not consumed yet or is less than ``ROTATION_GRACE`` seconds old. ``mono`` is
CLOCK_MONOTONIC (system-wide on Linux, immune to wall-clock steps). The per-worker ``seq``
makes a late-running handler (a worker busy in C code for minutes) still recognise the
rotation, and a direct signal after it open pdb; the grace covers two rotations racing one
handler. Residual cost: a direct SIGUSR1 sent less than ``ROTATION_GRACE`` s after a rotation
is taken for one (just signal again).

A session cannot hang the worker forever: waiting for a client is bounded by
``WSGIPROBE_PDB_TIMEOUT``, a connected client that stays silent by
``WSGIPROBE_PDB_IDLE_TIMEOUT`` (default 600 s); then the session detaches and the request
goes on. uWSGI's ``harakiri`` still kills a worker sitting in pdb past its limit.

The handler is installed without SA_RESTART (Python's default): a worker blocked in a system
call (a socket read that hangs) is interrupted, runs the handler there, and Python retries the
call afterwards (PEP 475); gunicorn's own ``siginterrupt(SIGUSR1, False)`` would let a hung
worker never reach the debugger.

While a session listens or is attached, ``WSGIPROBE_PDB_DIR/pdb-worker-N.json`` (when set)
holds ``{"worker", "pid", "host", "port", "since", "timeout", "state"}``; it is removed when the
session ends. One session per worker at a time: a SIGUSR1 during one is logged and ignored
(gunicorn's log reopen still runs). ``c`` with breakpoints set drops them: a session lives as
long as the interrupted request's debugging, not across requests. Only the main thread can be
stopped (Python runs signal handlers there): in a threaded worker (gthread, uWSGI threads) the
session opens in the main thread; ``sys._current_frames()`` shows the others.

Authentication. Any local user can connect to a loopback port, and the debugger runs code as
the app user, so a client's first line must be ``WSGIPROBE_PDB_SECRET`` (the deploy generates
one per host and writes it into the app's env file, readable by root and the app group only).
A wrong or missing secret, one longer than a line may be, or none within ``AUTH_TIMEOUT``
seconds is answered with a refusal and the connection closed before any pdb command is read;
the worker keeps listening for the right client until ``WSGIPROBE_PDB_TIMEOUT``. Clients are
read side by side (up to ``_MAX_PENDING`` at once, the oldest dropped first), so a silent one
cannot hold the port while the operator's waits. ``pdb_attach`` sends the secret from its own
environment; by hand (``telnet``), paste it as the first line. Still, keep the host on loopback
(the default) and reach it over ``ssh``: the secret travels in clear text.
"""

from __future__ import annotations

import atexit
import bdb
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import pdb
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from wsgiprobe import workers
from wsgiprobe.envvars import env_float, env_int, invalid

__all__ = [
    "PdbHookMiddleware",
    "PdbSettings",
    "gunicorn_post_worker_init",
    "gunicorn_wrap_master_usr1",
    "install",
    "settings_from_environment",
]

LOG = logging.getLogger("wsgiprobe.pdb")

ENV_ENABLED = "WSGIPROBE_PDB"
ENV_HOST = "WSGIPROBE_PDB_HOST"
ENV_BASE_PORT = "WSGIPROBE_PDB_BASE_PORT"
ENV_TIMEOUT = "WSGIPROBE_PDB_TIMEOUT"
ENV_DIR = "WSGIPROBE_PDB_DIR"
ENV_IDLE_TIMEOUT = "WSGIPROBE_PDB_IDLE_TIMEOUT"
ENV_SECRET = "WSGIPROBE_PDB_SECRET"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_BASE_PORT = 4440
DEFAULT_TIMEOUT = 60.0
DEFAULT_IDLE_TIMEOUT = 600.0

# A marker younger than this means "log rotation" even if this worker consumed its seq already.
ROTATION_GRACE = 1.0
# A refused client's one line starts with this (pdb_attach tells it from pdb's banner).
REFUSED = "wsgiprobe: refused"
# The secret: long enough not to be guessed through a loopback port, one line of plain ASCII.
MIN_SECRET_LENGTH = 16
# Seconds a client has to send the secret line; a line longer than this many bytes is refused.
AUTH_TIMEOUT = 5.0
_MAX_SECRET_LINE = 256
# Clients read at once while the worker waits for the right one; the oldest goes first.
_MAX_PENDING = 8
# Socket waits are sliced so a gunicorn worker can heartbeat while it waits for its client.
_SLICE = 1.0


@dataclass(frozen=True)
class PdbSettings:
    host: str = DEFAULT_HOST
    base_port: int = DEFAULT_BASE_PORT
    timeout: float = DEFAULT_TIMEOUT  # seconds to wait for a client
    dir: str | None = None  # session records and the log-rotation marker
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # a connected client silent this long is dropped
    # A client's first line must be this. Empty (only when built in code): every client refused.
    secret: str = field(default="", repr=False)

    def port_for(self, index: int | None) -> int:
        """Worker N listens on base + N; outside a known worker (a dev server), on base."""
        return self.base_port + (index or 0)


def settings_from_environment(environ: Mapping[str, str] | None = None) -> PdbSettings | None:
    """The settings from ``WSGIPROBE_PDB*``; None unless WSGIPROBE_PDB is "1" or "true".

    A bad value raises ValueError naming the variable: a typo must not silently disable the
    hook or bind it somewhere unexpected.
    """
    env = os.environ if environ is None else environ
    if env.get(ENV_ENABLED, "").strip().lower() not in ("1", "true"):
        return None
    host, base_port = address_from_environment(env)
    directory = env.get(ENV_DIR, "").strip() or None
    return PdbSettings(
        host=host,
        base_port=base_port,
        timeout=_seconds_from(env, ENV_TIMEOUT, DEFAULT_TIMEOUT),
        dir=directory,
        idle_timeout=_seconds_from(env, ENV_IDLE_TIMEOUT, DEFAULT_IDLE_TIMEOUT),
        secret=secret_from_environment(env),
    )


def address_from_environment(env: Mapping[str, str]) -> tuple[str, int]:
    """``WSGIPROBE_PDB_HOST`` and ``WSGIPROBE_PDB_BASE_PORT``, or their defaults; checked."""
    host = env.get(ENV_HOST, "").strip() or DEFAULT_HOST
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{ENV_HOST}={host!r}: expected an IP address, e.g. 127.0.0.1") from None
    base_port = env_int(env, ENV_BASE_PORT, DEFAULT_BASE_PORT)
    if not 1 <= base_port <= 65534:
        raise ValueError(f"{ENV_BASE_PORT}={base_port}: expected a port in 1..65534")
    return host, base_port


def secret_from_environment(env: Mapping[str, str]) -> str:
    """``WSGIPROBE_PDB_SECRET``, checked; ValueError (never quoting the value) if unfit."""
    secret = env.get(ENV_SECRET, "").strip()
    if not secret:
        raise ValueError(f"{ENV_SECRET} is not set: the debugger answers only a client sending it")
    if len(secret) < MIN_SECRET_LENGTH or not (secret.isascii() and secret.isprintable()):
        raise ValueError(
            f"{ENV_SECRET}: expected at least {MIN_SECRET_LENGTH} printable ASCII characters"
        )
    if any(char.isspace() for char in secret):
        raise ValueError(f"{ENV_SECRET}: expected no spaces (it is sent as one line)")
    return secret


def secret_matches(line: bytes, secret: str) -> bool:
    """Whether a client's first line (without its newline) is the secret; in constant time."""
    return bool(secret) and hmac.compare_digest(line.rstrip(b"\r"), secret.encode("ascii"))


def _seconds_from(env: Mapping[str, str], name: str, default: float) -> float:
    value = env_float(env, name, default)
    if value <= 0:
        raise invalid(env, name, "a positive number of seconds")
    return value


# -- per-process state -------------------------------------------------------------------------


@dataclass
class _ProcessState:
    pid: int
    settings: PdbSettings
    chain: Callable[[int, FrameType | None], object] | None
    heartbeat: Callable[[], object] | None
    installed_at: float  # time.monotonic() at install: older rotation markers are not ours
    rotation_seq: int = 0  # the last log-rotation marker seq consumed
    active: bool = False  # a session is listening or attached


_state: _ProcessState | None = None
# Set in the gunicorn master by gunicorn_wrap_master_usr1; workers inherit it through fork.
_rotation_marker: str | None = None
_marker_seq = 0


def install(
    settings: PdbSettings,
    *,
    chain: Callable[[int, FrameType | None], object] | None = None,
    heartbeat: Callable[[], object] | None = None,
) -> bool:
    """Make SIGUSR1 open a pdb session in this process; False if it cannot (not the main thread).

    ``chain`` is called first on every SIGUSR1 (gunicorn's log reopen); when None, a Python
    handler already installed is chained. ``heartbeat`` is called about once a second while a
    session waits, to keep the app server's watchdog quiet.
    """
    global _state
    if threading.current_thread() is not threading.main_thread():
        return False  # signal.signal works in the main thread only
    previous = signal.getsignal(signal.SIGUSR1)
    if chain is None:
        if previous is _on_usr1:
            # Installed again: keep what the first install chained (not a forked parent's).
            chain = _state.chain if _state is not None and _state.pid == os.getpid() else None
        elif callable(previous):
            chain = previous  # e.g. gunicorn's worker.handle_usr1 (uWSGI's is C: not visible)
    _ensure_log_handler()
    signal.signal(signal.SIGUSR1, _on_usr1)
    _state = _ProcessState(
        pid=os.getpid(),
        settings=settings,
        chain=chain,
        heartbeat=heartbeat,
        installed_at=time.monotonic(),
    )
    return True


def installed_here() -> bool:
    return _state is not None and _state.pid == os.getpid()


def _ensure_log_handler() -> None:
    # The session line must reach the app server's log (stderr) even if nobody set up logging.
    if LOG.level == logging.NOTSET:
        LOG.setLevel(logging.INFO)
    if not LOG.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s [%(name)s] %(message)s"))
        LOG.addHandler(handler)


# -- WSGI middleware (uWSGI) ---------------------------------------------------------------------


class PdbHookMiddleware:
    """Installs the SIGUSR1 handler in each worker at its first request, then passes through.

    ``settings`` None (WSGIPROBE_PDB off) makes it a plain pass-through.
    """

    def __init__(self, app: Callable[..., Any], settings: PdbSettings | None) -> None:
        self.app = app
        self.settings = settings
        self._pid: int | None = None  # the process the handler is installed in
        self._warned_pid: int | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if self.settings is not None and self._pid != os.getpid():
            self._install()
        return self.app(environ, start_response)

    def _install(self) -> None:
        pid = os.getpid()
        settings = self.settings
        assert settings is not None
        if installed_here() or install(settings):
            self._pid = pid
        elif self._warned_pid != pid:
            # Threaded workers: retried at each request until one runs in the main thread.
            self._warned_pid = pid
            LOG.info("pdb hook: pid %d not installed yet (request not in the main thread)", pid)


# -- gunicorn ------------------------------------------------------------------------------------


def gunicorn_post_worker_init(worker: Any, settings: PdbSettings | None = None) -> bool:
    """For gunicorn's ``post_worker_init``: install the handler, chained to the log reopen."""
    if settings is None:
        settings = settings_from_environment(os.environ)
    if settings is None:
        return False
    return install(settings, chain=worker.handle_usr1, heartbeat=worker.notify)


def gunicorn_wrap_master_usr1(arbiter: Any, settings: PdbSettings | None = None) -> bool:
    """For gunicorn's ``on_starting``/``when_ready``: mark master USR1s as log rotations.

    Replaces ``handle_usr1`` on this arbiter instance (its main loop looks it up with getattr)
    by one that writes the rotation marker before gunicorn's own reopens logs and signals the
    workers. Idempotent.
    """
    global _rotation_marker
    if settings is None:
        settings = settings_from_environment(os.environ)
    if settings is None:
        return False
    if getattr(arbiter, "_wsgiprobe_usr1_wrapped", False):
        return True
    master_pid = os.getpid()
    path = os.path.join(_marker_dir(settings, arbiter), f"gunicorn-usr1-{master_pid}.json")
    original = arbiter.handle_usr1

    def handle_usr1() -> None:
        try:
            _write_rotation_marker(path, list(getattr(arbiter, "WORKERS", {})))
        except OSError as error:
            arbiter.log.warning("wsgiprobe: cannot write the log-rotation marker: %s", error)
        original()

    arbiter.handle_usr1 = handle_usr1
    arbiter._wsgiprobe_usr1_wrapped = True
    _rotation_marker = path
    atexit.register(_remove_marker, path, master_pid, settings.dir is None)
    return True


def _marker_dir(settings: PdbSettings, arbiter: Any) -> str:
    if settings.dir:
        if os.path.isdir(settings.dir):
            return settings.dir  # the deploy's: its owner and mode are the deploy's business
        os.makedirs(settings.dir, mode=0o700)
        directory = settings.dir
    else:
        # Private (0700) rather than a guessable name in /tmp.
        directory = tempfile.mkdtemp(prefix="wsgiprobe-usr1-")
    # A root master whose workers drop to cfg.uid: the workers write their records there.
    cfg = getattr(arbiter, "cfg", None)
    uid, gid = getattr(cfg, "uid", None), getattr(cfg, "gid", None)
    if os.geteuid() == 0 and isinstance(uid, int) and isinstance(gid, int) and uid != 0:
        os.chown(directory, uid, gid)
    return directory


def _write_rotation_marker(path: str, pids: Iterable[int]) -> None:
    global _marker_seq
    _marker_seq += 1
    data = {
        "master_pid": os.getpid(),
        "seq": _marker_seq,
        "pids": sorted(pids),
        "mono": time.monotonic(),
        "wall": round(time.time(), 3),
    }
    # Atomic like workers.write_json_atomic, but readable (0644) by workers that dropped root.
    fd, temp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o644)
            json.dump(data, file)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _remove_marker(path: str, master_pid: int, remove_dir: bool) -> None:
    if os.getpid() != master_pid:
        return  # a worker exiting runs the atexit hooks it inherited
    with contextlib.suppress(OSError):
        os.unlink(path)
    if remove_dir:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _read_marker(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_log_rotation(
    marker: Mapping[str, Any] | None,
    *,
    pid: int,
    ppid: int,
    installed_at: float,
    consumed_seq: int,
    now: float,
) -> tuple[bool, int]:
    """Whether this SIGUSR1 came from the master's log rotation; and the seq now consumed."""
    if not marker:
        return False, consumed_seq
    seq, mono, pids = marker.get("seq"), marker.get("mono"), marker.get("pids")
    if (
        marker.get("master_pid") != ppid
        or not isinstance(seq, int)
        or not isinstance(mono, int | float)
        or not isinstance(pids, list)
        or pid not in pids
        or mono < installed_at  # written before this handler existed: not about this signal
    ):
        return False, consumed_seq
    if seq > consumed_seq:
        return True, seq
    return now - mono < ROTATION_GRACE, consumed_seq


# -- the handler ---------------------------------------------------------------------------------


def _on_usr1(signum: int, frame: FrameType | None) -> None:
    state = _state
    if state is None or state.pid != os.getpid():
        # A process forked from a worker inherited the handler: no pdb there.
        if state is not None and state.chain is not None:
            state.chain(signum, frame)
        return
    rotation, state.rotation_seq = is_log_rotation(
        _read_marker(_rotation_marker),
        pid=state.pid,
        ppid=os.getppid(),
        installed_at=state.installed_at,
        consumed_seq=state.rotation_seq,
        now=time.monotonic(),
    )
    if state.chain is not None:
        try:
            state.chain(signum, frame)  # gunicorn: reopen the logs, for both kinds of USR1
        except Exception:
            LOG.exception("pdb: the chained SIGUSR1 handler failed")
    if rotation:
        LOG.info("pdb: SIGUSR1 from the master (log rotation) in pid %d: no session", state.pid)
        return
    if state.active:
        LOG.warning("pdb: SIGUSR1 ignored in pid %d: a session is already open", state.pid)
        return
    if frame is None:
        LOG.warning("pdb: SIGUSR1 in pid %d: no Python frame to stop in", state.pid)
        return
    _open_session(state, frame)
    # Nothing may run here: a stepping session traces every Python call made from now on.


def _open_session(state: _ProcessState, frame: FrameType) -> None:
    settings = state.settings
    index = workers.worker_index()
    session = _Session(state, index, settings.port_for(index))
    state.active = True
    try:
        client = session.wait_for_client()
    except BaseException:
        session.close("interrupted")
        raise
    if client is None:
        session.close(session.failure or f"no client within {settings.timeout:g}s")
        return
    conn, typed_ahead = client
    io = _SocketIO(conn, settings.idle_timeout, state.heartbeat, typed_ahead)
    debugger = _RemotePdb(io, session.close)
    debugger.begin(frame)
    # As in _on_usr1: nothing after begin().


class _Session:
    """The listening socket, the record file and the log lines of one session."""

    def __init__(self, state: _ProcessState, index: int | None, port: int) -> None:
        self.state = state
        self.index = index
        self.port = port
        self.host = state.settings.host
        self.listener: socket.socket | None = None
        self.conn: socket.socket | None = None
        self.record_path: str | None = None
        self.closed = False
        self.failure: str | None = None
        self.since = time.time()

    def wait_for_client(self) -> tuple[socket.socket, bytes] | None:
        """The first client whose first line is the secret, and what it sent after that line."""
        settings = self.state.settings
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener = listener
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(_MAX_PENDING)
            listener.setblocking(False)
        except OSError as error:
            self.failure = f"cannot listen on {self.host}:{self.port}: {error}"
            return None
        self._write_record("listening")
        LOG.warning(
            "pdb: worker %s pid %d: SIGUSR1, pdb listening on %s:%d, waiting %gs for a client",
            self.index, self.state.pid, self.host, self.port, settings.timeout,
        )  # fmt: skip
        if not settings.secret:
            LOG.warning("pdb: no secret set: every client will be refused")
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            authenticated = self._authenticate(selector, time.monotonic() + settings.timeout)
        if authenticated is None:
            return None
        conn, peer, typed_ahead = authenticated
        # One client only: later connections are refused rather than queued behind this one.
        listener.close()
        self.listener = None
        conn.setblocking(True)
        self.conn = conn
        self._write_record("attached")
        LOG.warning("pdb: worker %s pid %d: client %s attached", self.index, self.state.pid,
                    _format_peer(peer))  # fmt: skip
        return conn, typed_ahead

    def _authenticate(
        self, selector: selectors.BaseSelector, deadline: float
    ) -> tuple[socket.socket, Any, bytes] | None:
        """Read every client's first line side by side until one is the secret or time is up.

        Nothing a client sends reaches pdb before its secret line checks out; a refused client
        gets one line saying so, and the worker goes on waiting for the next.
        """
        pending: dict[socket.socket, _Pending] = {}  # in order of arrival
        last_beat = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return None
                for conn in [c for c, p in pending.items() if now >= p.deadline]:
                    self._refuse(selector, pending, conn, f"no secret within {AUTH_TIMEOUT:g}s")
                if now - last_beat >= _SLICE:
                    last_beat = now
                    self._heartbeat()
                wake = min([deadline, last_beat + _SLICE, *(p.deadline for p in pending.values())])
                for key, _ in selector.select(max(wake - now, 0.0)):
                    if key.data is None:
                        self._accept(selector, pending, key.fileobj)  # type: ignore[arg-type]
                        continue
                    conn = key.fileobj
                    assert isinstance(conn, socket.socket)
                    client = pending[conn]
                    try:
                        data = conn.recv(_MAX_SECRET_LINE + 1 - len(client.buffer))
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    client.buffer += data
                    line, newline, rest = client.buffer.partition(b"\n")
                    if newline and secret_matches(line, self.state.settings.secret):
                        selector.unregister(conn)
                        del pending[conn]
                        return conn, client.peer, rest
                    if newline:
                        self._refuse(selector, pending, conn, "wrong secret")
                    elif not data:
                        self._refuse(selector, pending, conn, "closed before the secret")
                    elif len(client.buffer) > _MAX_SECRET_LINE:
                        self._refuse(selector, pending, conn, "first line too long")
        finally:
            for conn in list(pending):
                self._refuse(selector, pending, conn, "no longer waiting for a client")

    def _accept(
        self,
        selector: selectors.BaseSelector,
        pending: dict[socket.socket, _Pending],
        listener: socket.socket,
    ) -> None:
        try:
            conn, peer = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        conn.setblocking(False)
        if len(pending) >= _MAX_PENDING:
            oldest = next(iter(pending))
            self._refuse(selector, pending, oldest, "too many clients at once")
        pending[conn] = _Pending(peer, time.monotonic() + AUTH_TIMEOUT)
        selector.register(conn, selectors.EVENT_READ, "client")

    def _refuse(
        self,
        selector: selectors.BaseSelector,
        pending: dict[socket.socket, _Pending],
        conn: socket.socket,
        reason: str,
    ) -> None:
        client = pending.pop(conn)
        selector.unregister(conn)
        with contextlib.suppress(OSError):
            conn.send(f"{REFUSED} ({reason})\n".encode(), socket.MSG_NOSIGNAL)
        conn.close()
        LOG.warning("pdb: worker %s pid %d: client %s refused (%s)", self.index,
                    self.state.pid, _format_peer(client.peer), reason)  # fmt: skip

    def _heartbeat(self) -> None:
        if self.state.heartbeat is not None:
            with contextlib.suppress(Exception):
                self.state.heartbeat()

    def _write_record(self, status: str) -> None:
        directory = self.state.settings.dir
        if not directory:
            return
        name = f"pdb-worker-{self.index}.json" if self.index else f"pdb-pid-{self.state.pid}.json"
        self.record_path = os.path.join(directory, name)
        data = {
            "worker": self.index,
            "pid": self.state.pid,
            "host": self.host,
            "port": self.port,
            "since": round(self.since, 3),
            "timeout": self.state.settings.timeout,
            "state": status,
        }
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            workers.write_json_atomic(self.record_path, data)
        except OSError as error:
            LOG.warning("pdb: cannot write the session record %s: %s", self.record_path, error)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self.listener, self.conn):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        if self.record_path:
            with contextlib.suppress(OSError):
                os.unlink(self.record_path)
        self.state.active = False
        LOG.warning("pdb: worker %s pid %d: session on %s:%d ended (%s); the worker goes on",
                    self.index, self.state.pid, self.host, self.port, reason)  # fmt: skip


@dataclass
class _Pending:
    """A client that has not sent its secret line yet."""

    peer: Any
    deadline: float  # time.monotonic() by which its secret line must have come
    buffer: bytes = b""


def _format_peer(peer: Any) -> str:
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)


class _SocketIO:
    """pdb's stdin and stdout over the client socket; never raises into the debugged code.

    A closed or broken connection reads as EOF (pdb then detaches); writes to it are dropped.
    Reads wait in slices so the worker heartbeats, and give up after ``idle_timeout``.
    """

    encoding = "utf-8"
    errors = "replace"

    def __init__(
        self,
        conn: socket.socket,
        idle_timeout: float,
        heartbeat: Callable[[], object] | None,
        typed_ahead: bytes = b"",
    ) -> None:
        self.conn = conn
        self.idle_timeout = idle_timeout
        self.heartbeat = heartbeat
        self.buffer = typed_ahead  # what the client sent right after its secret line
        self.broken = False
        self.end_reason = "client closed the connection"

    def readline(self, size: int = -1) -> str:
        deadline = time.monotonic() + self.idle_timeout
        while b"\n" not in self.buffer and not self.broken:
            left = deadline - time.monotonic()
            if left <= 0:
                self.write(f"\n*** idle for {self.idle_timeout:g}s: detaching\n")
                self.end_reason = f"client idle for {self.idle_timeout:g}s"
                self.broken = True
                break
            try:
                self.conn.settimeout(min(left, _SLICE))
                data = self.conn.recv(4096)
            except TimeoutError:
                if self.heartbeat is not None:
                    with contextlib.suppress(Exception):
                        self.heartbeat()
                continue
            except OSError:
                data = b""
            if not data:
                self.broken = True
            self.buffer += data
        if b"\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\n")
            return line.decode("utf-8", "replace").rstrip("\r") + "\n"
        return ""  # EOF: pdb's do_EOF, i.e. detach

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self.conn.sendall(text.encode("utf-8", "replace"), socket.MSG_NOSIGNAL)
            except OSError:
                self.broken = True
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class _RemotePdb(pdb.Pdb):
    """A Pdb over a socket whose continue, quit and EOF all detach and let the worker go on."""

    def __init__(self, io: _SocketIO, on_detach: Callable[[str], None]) -> None:
        kwargs: dict[str, Any] = {}
        if sys.version_info >= (3, 14):
            kwargs["backend"] = "settrace"  # begin() drives sys.settrace itself
        super().__init__(stdin=io, stdout=io, nosigint=True, readrc=False, **kwargs)
        self.use_rawinput = False
        self._io = io
        self._on_detach = on_detach
        self._detached = False
        self._reason = "continue"  # why the next set_continue detaches

    def begin(self, frame: FrameType) -> None:
        """Prompt now, in ``frame``; a stepping command goes on tracing after the handler.

        set_trace() does the version-specific bookkeeping (f_trace on every frame up the stack);
        the global trace is then paused while the first prompt runs inside the signal handler,
        else pdb would stop in its own code, and turned back on as the very last action if the
        user stepped (n, s, r, until) rather than continued.
        """
        self.message(
            f"wsgiprobe: pdb in worker {workers.worker_index()} pid {os.getpid()}, stopped where"
            " SIGUSR1 interrupted it. 'c' (or q, or closing the connection) lets it go on."
        )
        self.set_trace(frame)
        sys.settrace(None)
        try:
            self.interaction(frame, None)
        except Exception:
            LOG.exception("pdb: the session failed")
            self._detach("error")
            return
        if not self._detached:
            sys.settrace(self.trace_dispatch)

    def interaction(self, frame: FrameType | None, traceback: Any) -> None:
        try:
            super().interaction(frame, traceback)
        except BaseException:
            self._detach("interrupted")  # e.g. gunicorn's SIGQUIT handler calling sys.exit
            raise

    def _detach(self, reason: str) -> None:
        if self._detached:
            return
        self._detached = True
        with contextlib.suppress(Exception):
            self.clear_all_breaks()
            bdb.Bdb.set_continue(self)  # without breakpoints: stop tracing, clear frames' f_trace
        sys.settrace(None)
        self._on_detach(reason)

    def set_continue(self) -> None:
        # Breakpoints would need the session to outlive this request: continuing detaches.
        if self.breaks:
            self.message("wsgiprobe: breakpoints are dropped when the session detaches")
        self._detach(self._reason)

    def do_quit(self, arg: str) -> bool:
        # pdb's quit raises BdbQuit into the request; here it only detaches.
        self.message("wsgiprobe: detaching, the worker goes on")
        self._reason = "quit"
        return bool(self.do_continue(arg))

    do_q = do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:
        self._reason = self._io.end_reason
        return bool(self.do_continue(arg))

    def do_run(self, arg: str) -> None:
        self.error("run/restart is not available in a worker")

    do_restart = do_run

    def do_interact(self, arg: str) -> None:
        self.error("interact is not available remotely (it would read the worker's stdin)")
