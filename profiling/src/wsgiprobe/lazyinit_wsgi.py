"""The ``/lazyinit`` route: run the app's registered inits in the worker that serves it.

``LazyInitMiddleware(app)`` wraps any WSGI app. Every other path costs one string comparison.

- ``GET /lazyinit``: runs the pending inits of ``lazyinit``'s default registry in this worker::

      {"worker": 2, "pid": 812, "server": "uwsgi", "warm": true, "init_seconds": 0.23,
       "ran": ["renderer"], "pending": [], "busy": false}

  At most ``max_concurrent`` processes of the host initialise at once: a worker must hold one
  of the ``slot-<n>.lock`` files in ``state_dir`` (``fcntl.flock``, non-blocking; the kernel
  releases it if the worker dies). A cold worker that finds no free slot answers at once,
  HTTP 200 with ``"warm": false, "busy": true``: try again. 200, not 503, because a busy
  answer is a normal state report, and proxies may swap a 5xx body for an error page.
  Threads of one worker wait for the one initialising. Without a state dir there is no limit
  across processes.
- An init that raises: HTTP 500 ``{"error": "init_failed", "message": "ValueError: ...",
  "worker", "pid", "pending"}``; the worker stays cold (the registry keeps the init pending)
  and the traceback goes to the server's error log (``wsgi.errors``).
- ``GET /lazyinit?hold=MS`` (0..1000): a worker that is already warm keeps the request open
  MS milliseconds before answering. The warm-up uses it to keep warm workers busy, so that its
  concurrent requests reach the cold ones. A cold worker never holds.
- ``GET /lazyinit?status``: the host's workers, from the state files each worker writes into
  ``state_dir`` (``worker-<index>.json``, atomic) whenever its state changes::

      {"workers": [{"worker": 1, "pid": 811, "server": "uwsgi", "warm": true,
                    "init_seconds": 0.23, "initialising": false, "pending": [],
                    "error": null, "updated": 1700000000.0}, ...],
       "stale": [{"worker": 3, "pid": 790}]}

  Files of processes that are gone, or are no children of this worker's master (a reused
  pid), are listed under ``stale``; never deleted: the index's next worker overwrites its
  file. A worker appears once it has answered ``/lazyinit`` (any form); the one answering
  always appears. Without a state dir, only the answering worker.
- Other methods: 405; a malformed ``hold``: 400; both JSON.
- ``release``: a label of the code this worker loaded (the deploy's release directory), in
  every answer and state file, so that a reload can be seen to have reached every worker.
- ``initialise_now()``: run the inits at app load, before the worker takes a request (uWSGI
  with lazy-apps and gunicorn without preload load the app in each new worker). Best effort:
  without a free slot, or when an init fails, the worker stays cold for the warm-up.

``state_dir`` defaults to ``$WSGIPROBE_LAZYINIT_DIR``; it is created (mode 0700) if missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from wsgiprobe import lazyinit, workers

STATE_DIR_ENV = "WSGIPROBE_LAZYINIT_DIR"
MAX_HOLD_MS = 1000
_BUSY = object()  # no free init slot

WSGIApp = Callable[..., Iterable[bytes]]
StartResponse = Callable[..., Any]


class _ProcessState:
    """What one process knows about its own init; a forked worker starts from a new one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # one thread of the process initialises at a time
        self.initialising = False
        self.error: str | None = None
        self.written: dict[str, Any] | None = None
        self.dir_ready = False
        self.warned = False


class LazyInitMiddleware:
    def __init__(
        self,
        app: WSGIApp,
        path: str = "/lazyinit",
        state_dir: str | None = None,
        max_concurrent: int = 1,
        *,
        registry: lazyinit.Registry | None = None,
        release: str | None = None,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.app = app
        self.path = path
        self.state_dir = state_dir or os.environ.get(STATE_DIR_ENV) or None
        self.max_concurrent = max_concurrent
        self.registry = registry if registry is not None else lazyinit.default_registry()
        self.release = release
        self._state = _ProcessState()
        _instances.add(self)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != self.path:
            return self.app(environ, start_response)
        return self._lazyinit(environ, start_response)

    # -- the route -----------------------------------------------------------------------------

    def _lazyinit(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if environ.get("REQUEST_METHOD") != "GET":
            body = {"error": "method_not_allowed", "message": f"{self.path} answers GET only"}
            return _json(start_response, "405 Method Not Allowed", body, [("Allow", "GET")])
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if "status" in query:
            self._save_state()
            return _json(start_response, "200 OK", self.status())
        hold = query.get("hold", ["0"])
        if len(hold) != 1 or not re.fullmatch(r"[0-9]{1,4}", hold[0]) or int(hold[0]) > 1000:
            message = f"hold must be an integer number of milliseconds, 0..{MAX_HOLD_MS}"
            body = {"error": "bad_request", "message": message}
            return _json(start_response, "400 Bad Request", body)

        if not self.registry.pending():
            if int(hold[0]):
                time.sleep(int(hold[0]) / 1000)
            self._save_state()
            return _json(start_response, "200 OK", self._answer([], busy=False))
        return self._initialise(environ, start_response)

    def _initialise(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        outcome = self._run_inits(lambda text: _log(environ, text))
        if outcome is _BUSY:
            return _json(start_response, "200 OK", self._answer([], busy=True))
        if isinstance(outcome, str):
            body = {
                "error": "init_failed",
                "message": outcome,
                **workers.describe(),
                "pending": self.registry.pending(),
            }
            return _json(start_response, "500 Internal Server Error", body)
        return _json(start_response, "200 OK", self._answer(outcome, busy=False))

    def initialise_now(self) -> bool:
        """Run the pending inits now (at app load); whether the worker is warm after it."""
        # _run_inits saves the state whatever happens: a cold worker is listed, with its error.
        self._run_inits(lambda text: print(text, end="", file=sys.stderr, flush=True))
        return not self.registry.pending()

    def _run_inits(self, log: Callable[[str], None]) -> list[str] | str | object:
        """The inits that ran, the error message of a failed one, or _BUSY (no free slot)."""
        state = self._state
        with state.lock:
            if not self.registry.pending():  # another thread of this worker just did it
                self._save_state()
                return []
            slot = self._acquire_slot()
            if slot is None:
                self._save_state()
                return _BUSY
            try:
                state.initialising = True
                self._save_state()
                try:
                    ran = self.registry.run_pending()
                except Exception as error:
                    state.error = f"{type(error).__name__}: {error}"
                    log(f"wsgiprobe: lazyinit failed in pid {os.getpid()}:\n")
                    log(traceback.format_exc())
                    return state.error
                state.error = None
            finally:
                state.initialising = False
                if slot >= 0:
                    os.close(slot)  # releases the flock
                self._save_state()
        return list(ran)

    def _answer(self, ran: list[str], *, busy: bool) -> dict[str, Any]:
        pending = self.registry.pending()
        return {
            **workers.describe(),
            "warm": not pending,
            "init_seconds": self._init_seconds(pending),
            "ran": ran,
            "pending": pending,
            "busy": busy,
            "release": self.release,
        }

    def _init_seconds(self, pending: list[str]) -> float | None:
        # Whoever ran them (this route or the app on a first request): what the inits took.
        return None if pending else round(sum(self.registry.done().values()), 6)

    # -- the limit across processes ------------------------------------------------------------

    def _acquire_slot(self) -> int | None:
        """A flock-ed slot file's fd (close it to release), -1 without a state dir (no limit),
        or None when every slot is taken."""
        if not self._ensure_dir():
            return -1
        assert self.state_dir is not None
        for number in range(self.max_concurrent):
            path = os.path.join(self.state_dir, f"slot-{number}.lock")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as error:
                # A limit that cannot work must not keep the worker cold for good.
                self._warn(f"cannot open {path}, initialising without a limit: {error}")
                return -1
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        return None

    # -- state files and status ----------------------------------------------------------------

    def _entry(self) -> dict[str, Any]:
        pending = self.registry.pending()
        return {
            **workers.describe(),
            "warm": not pending,
            "init_seconds": self._init_seconds(pending),
            "initialising": self._state.initialising,
            "pending": pending,
            "error": self._state.error,
            "release": self.release,
        }

    def _save_state(self) -> None:
        state = self._state
        entry = self._entry()
        if entry == state.written or not self._ensure_dir():
            return
        assert self.state_dir is not None
        index = entry["worker"]
        name = f"worker-{index}.json" if index is not None else f"pid-{entry['pid']}.json"
        try:
            workers.write_json_atomic(
                os.path.join(self.state_dir, name), {**entry, "updated": round(time.time(), 3)}
            )
        except OSError as error:
            self._warn(f"cannot write the lazyinit state in {self.state_dir}: {error}")
            return
        state.written = entry

    def status(self) -> dict[str, Any]:
        mine = {**self._entry(), "updated": round(time.time(), 3)}
        found: dict[object, dict[str, Any]] = {}
        stale: list[dict[str, Any]] = []
        for entry in self._read_states():
            if entry["pid"] == mine["pid"]:
                continue  # this process's own view is the freshest
            if not _sibling(entry["pid"]):
                stale.append({"worker": entry.get("worker"), "pid": entry["pid"]})
                continue
            key = entry.get("worker") if entry.get("worker") is not None else ("pid", entry["pid"])
            if key not in found or found[key].get("updated", 0) < entry.get("updated", 0):
                found[key] = entry
        key = mine["worker"] if mine["worker"] is not None else ("pid", mine["pid"])
        found[key] = mine
        entries = sorted(found.values(), key=_worker_order)
        return {"workers": entries, "stale": sorted(stale, key=_worker_order)}

    def _read_states(self) -> list[dict[str, Any]]:
        if not self.state_dir:
            return []
        try:
            names = os.listdir(self.state_dir)
        except OSError:
            return []
        entries = []
        for name in names:
            if not name.endswith(".json") or not name.startswith(("worker-", "pid-")):
                continue
            try:
                with open(os.path.join(self.state_dir, name), encoding="utf-8") as file:
                    entry = json.load(file)
            except (OSError, ValueError):
                continue  # vanished or foreign: not a worker's state
            if isinstance(entry, dict) and isinstance(entry.get("pid"), int):
                entries.append(entry)
        return entries

    def _ensure_dir(self) -> bool:
        state = self._state
        if not self.state_dir:
            return False
        if not state.dir_ready:
            try:
                os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            except OSError as error:
                self._warn(f"cannot create the lazyinit state dir {self.state_dir}: {error}")
                return False
            state.dir_ready = True
        return True

    def _warn(self, message: str) -> None:
        if not self._state.warned:  # once per process: the log must not fill up with it
            self._state.warned = True
            print(f"wsgiprobe: {message}", file=sys.stderr, flush=True)

    def _after_fork_in_child(self) -> None:
        self._state = _ProcessState()


def _sibling(pid: int) -> bool:
    """Whether ``pid`` is a live worker of this server: alive and a child of our master (a pid
    from an earlier run may have been reused by any process since)."""
    if not workers.pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return True  # no /proc (or not ours to read): alive is all we can tell
    fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
    return len(fields) > 1 and int(fields[1]) == os.getppid()


def _worker_order(entry: dict[str, Any]) -> tuple[bool, int, int]:
    worker = entry.get("worker")
    return (worker is None, worker if isinstance(worker, int) else 0, entry.get("pid") or 0)


def _json(
    start_response: StartResponse,
    status: str,
    body: dict[str, Any],
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
            *(headers or []),
        ],
    )
    return [data]


def _log(environ: dict[str, Any], text: str) -> None:
    stream = environ.get("wsgi.errors") or sys.stderr
    with contextlib.suppress(Exception):
        stream.write(text)
        stream.flush()


_instances: weakref.WeakSet[LazyInitMiddleware] = weakref.WeakSet()


def _reset_children() -> None:
    # An app loaded in the master (uWSGI without lazy-apps, gunicorn --preload) is forked: each
    # worker needs its own lock (the master's may be held) and its own idea of what it wrote.
    for instance in list(_instances):
        instance._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_children)
