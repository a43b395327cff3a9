"""gunicorn server hooks: a stable worker index (1..N) and a record of the current workers.

The deploy's gunicorn.conf.py imports them::

    from wsgiprobe.gunicorn_hooks import *  # noqa: F403

- The master keeps a slot table. ``pre_fork`` gives each new worker the lowest free index and
  hands it to the child on the worker object; ``post_fork`` (in the child) records it with
  ``workers.set_worker_index``. ``child_exit`` (and ``worker_exit`` when the master reaps a
  worker itself) frees the slot, so a respawned worker takes the index of the one it replaces.
  Slots are held by worker object, not by index: an exit frees only the exiting worker's own.
- A HUP reload (gunicorn's ``reload()``) calls ``on_reload``, then forks the new generation,
  then SIGTERMs the old one, which exits when its requests are done. ``on_reload`` retires the
  old generation's slots, so the new one takes 1..N again and the old workers' exits free
  nothing. A retired worker leaves the record as soon as the first new worker writes it (the
  warm-up and ``pdb_attach`` never pick it then), but until it has exited it shares its index
  with its successor: what it writes under that index as it finishes its last requests (a
  lazyinit ``worker-N.json``) may overwrite its successor's, and a pdb session it was still
  waiting for keeps base port + N (at most ``WSGIPROBE_PDB_TIMEOUT``): a client attaching to
  worker N meanwhile reaches that session, its successor cannot listen there.
- Not kept within 1..N: TTOU (gunicorn stops its oldest workers, whatever their index), and a
  config whose own ``on_reload`` does not call ours (a reload then goes on from N+1).
- With ``WSGIPROBE_WORKERS_FILE`` set, the current workers are written there (JSON, atomic)::

      {"server": "gunicorn", "master_pid": 10, "num_workers": 4, "seq": 7, "updated": 1.7e9,
       "workers": [{"index": 1, "pid": 11}, ...]}

  The master learns a worker's pid only after ``pre_fork`` returns and gunicorn has no hook in
  the master after the fork, so the new child writes the record (the master's table as of its
  fork, its own pid included) and the master writes it when a worker exits. ``seq`` orders the
  writers: under a lock file, an older view never replaces a newer one. ``on_exit`` removes the
  record, so a stopped server is not mistaken for a running one.
- Not covered: during a USR2 binary upgrade both masters write the record; the last one wins.

Remote pdb (``wsgiprobe.pdbhook``), a no-op unless ``WSGIPROBE_PDB`` is on: ``on_starting``
also marks the master's SIGUSR1 (log rotation, forwarded to every worker) so that it opens no
session; ``post_worker_init`` installs the worker's SIGUSR1 -> pdb handler, chained to gunicorn's
log reopen. ``post_worker_init`` is not in ``__all__``: a config opts in with
``post_worker_init = gunicorn_hooks.post_worker_init`` (the deploy does when pdb_enabled), and
an app with a ``post_worker_init`` of its own keeps it and chains ours.

Other hooks: every hook not in ``__all__`` is left alone, so another module can define it. A
module that needs one of the hooks below too must call ours, e.g.
``post_fork = chain(gunicorn_hooks.post_fork, my_post_fork)``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from wsgiprobe import pdbhook, workers

__all__ = [
    "child_exit",
    "nworkers_changed",
    "on_exit",
    "on_reload",
    "on_starting",
    "post_fork",
    "pre_fork",
    "worker_exit",
]

RECORD_ENV = "WSGIPROBE_WORKERS_FILE"
_INDEX_ATTRIBUTE = "wsgiprobe_index"


class SlotTable:
    """Worker indexes in use, each held by one worker object (compared by identity)."""

    def __init__(self) -> None:
        self._slots: dict[int, Any] = {}
        self.seq = 0  # bumped on every change: orders the record's writers

    def assign(self, worker: Any) -> int:
        index = 1
        while index in self._slots:
            index += 1
        self._slots[index] = worker
        self.seq += 1
        return index

    def free(self, worker: Any) -> int | None:
        for index, holder in self._slots.items():
            if holder is worker:
                del self._slots[index]
                self.seq += 1
                return index
        return None

    def keep_only(self, live: Iterable[Any]) -> None:
        """Free the slots of workers that are gone without an exit hook (a failed fork)."""
        alive = {id(worker) for worker in live}
        for index in [i for i, w in self._slots.items() if id(w) not in alive]:
            del self._slots[index]
            self.seq += 1

    def entries(self) -> list[tuple[int, Any]]:
        return sorted(self._slots.items(), key=lambda item: item[0])

    def clear(self) -> None:
        """Free every slot; a reload retires its holders, which keep their index meanwhile."""
        self._slots.clear()
        self.seq += 1


_table = SlotTable()


def chain(*hooks: Callable[..., object]) -> Callable[..., None]:
    """One hook that calls each of ``hooks`` in turn with the same arguments."""

    def chained(*args: Any) -> None:
        for hook in hooks:
            hook(*args)

    return chained


# -- the hooks (names and signatures as gunicorn's settings expect) --------------------------


def on_starting(server: Any) -> None:
    _table.clear()
    _write_record(server, os.getpid())
    # Before any worker exists, so every worker inherits the marker's path through fork.
    pdbhook.gunicorn_wrap_master_usr1(server)


def post_worker_init(worker: Any) -> None:
    # After gunicorn's own signal setup in the worker (init_signals), so ours is not replaced.
    pdbhook.gunicorn_post_worker_init(worker)


def nworkers_changed(server: Any, new_value: int, old_value: int | None) -> None:
    # None: gunicorn's own first setting, before on_starting; TTIN/TTOU and reloads come later.
    if old_value is not None and os.getpid() == getattr(server, "pid", None):
        _table.seq += 1
        _write_record(server, os.getpid())


def on_reload(server: Any) -> None:
    # Before gunicorn forks the new generation: it starts at 1 again, while the old workers,
    # retired here, wait for their SIGTERM. Their exits then find no slot of theirs to free.
    # No record yet: the old workers serve until every new one has forked and written it.
    _table.clear()


def pre_fork(server: Any, worker: Any) -> None:
    # Every worker whose fork succeeded is in server.WORKERS by now.
    _table.keep_only(server.WORKERS.values())
    setattr(worker, _INDEX_ATTRIBUTE, _table.assign(worker))


def post_fork(server: Any, worker: Any) -> None:
    # In the new worker, which inherited the master's table as of its fork (its own slot
    # included) and knows its own pid: the one process able to write the complete record now.
    index = getattr(worker, _INDEX_ATTRIBUTE, None)
    if index is not None:
        workers.set_worker_index(index)
    _write_record(server, worker.ppid)


def child_exit(server: Any, worker: Any) -> None:
    _release(server, worker)


def worker_exit(server: Any, worker: Any) -> None:
    # Also called in the worker itself as it exits: only the master's call matters here (it
    # comes when the master found the worker already gone while signalling it).
    if os.getpid() == getattr(server, "pid", None):
        _release(server, worker)


def on_exit(server: Any) -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    with contextlib.suppress(OSError, ValueError), _record_lock(path):
        with open(path, encoding="utf-8") as file:
            record = json.load(file)
        if record.get("master_pid") == os.getpid():
            os.unlink(path)


def _release(server: Any, worker: Any) -> None:
    # A retired worker (see on_reload) holds no slot: nothing changes, nothing to write.
    if _table.free(worker) is not None:
        _write_record(server, os.getpid())


# -- the record --------------------------------------------------------------------------------


def record(
    master_pid: int, num_workers: int | None, table: SlotTable | None = None
) -> dict[str, Any]:
    table = table if table is not None else _table
    return {
        "server": "gunicorn",
        "master_pid": master_pid,
        "num_workers": num_workers,
        "seq": table.seq,
        "updated": round(time.time(), 3),
        "workers": [
            {"index": index, "pid": worker.pid}
            for index, worker in table.entries()
            if getattr(worker, "pid", None)
        ],
    }


def _write_record(server: Any, master_pid: int) -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    data = record(master_pid, getattr(server, "num_workers", None))
    try:
        with _record_lock(path):
            if _newer_than_file(data, path):
                workers.write_json_atomic(path, data)
    except OSError as error:
        # The record helps the warm-up; it must never stop the master or a worker.
        log = getattr(server, "log", None)
        if log is not None:
            log.warning("wsgiprobe: cannot write the worker record %s: %s", path, error)


def _newer_than_file(data: dict[str, Any], path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as file:
            current = json.load(file)
    except (OSError, ValueError):
        return True
    if not isinstance(current, dict) or current.get("master_pid") != data["master_pid"]:
        return True  # another (a previous) master's record
    seq = current.get("seq")
    return not isinstance(seq, int) or data["seq"] > seq


@contextlib.contextmanager
def _record_lock(path: str) -> Iterator[None]:
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
