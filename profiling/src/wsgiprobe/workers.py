"""Which worker is this: a stable 1..N index under uWSGI and gunicorn.

uWSGI gives one (``uwsgi.worker_id()``, 1-based, kept across respawns). gunicorn does not: the
toolkit's gunicorn hooks (``wsgiprobe.gunicorn_hooks``) keep a slot table in the master and
hand each new worker a free index, which ``set_worker_index`` records in the worker.

Also the small file and process helpers the toolkit's worker records share (``pid_alive``,
``write_json_atomic``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import sys
import tempfile
from typing import Any

_gunicorn_index: int | None = None


@functools.cache
def _uwsgi() -> Any:
    """uWSGI's module, or None outside uWSGI. Looked up once per process: a failed import is
    not cached by Python, and retrying it costs ~0.2 ms on every call."""
    try:
        import uwsgi  # type: ignore[import-not-found]  # only importable inside uWSGI
    except ImportError:
        return None
    return uwsgi


def set_worker_index(index: int) -> None:
    """Record this process's index (gunicorn's post_fork hook calls it in the new worker)."""
    global _gunicorn_index
    _gunicorn_index = index


def worker_index() -> int | None:
    """This worker's 1-based index, or None outside a known app server (a dev server, a test)."""
    uwsgi = _uwsgi()
    if uwsgi is None:
        return _gunicorn_index
    index = uwsgi.worker_id()
    return index if index > 0 else None  # 0: the master


def server_name() -> str:
    if _uwsgi() is None:
        return "gunicorn" if _gunicorn_index is not None else "unknown"
    return "uwsgi"


def describe() -> dict[str, object]:
    """What a profile or a status view records about the current worker."""
    return {"server": server_name(), "worker": worker_index(), "pid": os.getpid()}


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_json_atomic(path: str, data: object) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    directory = os.path.dirname(path) or "."
    fd, temp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file, separators=(",", ":"))
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send this process ``sig`` when its parent dies (Linux only; whether it
    is set). A worker whose master was killed must not live on: uWSGI workers that share
    pipes with a respawned sibling keep each other from noticing, and serve nobody while they
    hold memory, init slots and pdb ports. SIGTERM lets the request in flight finish."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() == 1:  # the parent died before the call: nobody will send it
        os.kill(os.getpid(), sig)
    return True
