"""A registry of expensive one-time initialisations, run once per process.

An app registers what it would otherwise do on its first request (load fonts, connect to a
database) and a warm-up hook runs it ahead of real traffic::

    from wsgiprobe import lazyinit

    lazyinit.register("renderer", renderer.ensure_ready)
    lazyinit.run_pending()  # {"renderer": 0.023}: what ran now, in seconds

- Each init runs once per process: a forked child (app server worker) starts with every init
  pending again, because what the parent made (connections above all) is not the child's.
- ``run_pending`` is thread-safe: concurrent callers wait for the one running the inits and
  then find nothing left to do. An init must not call ``run_pending`` itself.
- An init that raises stays pending; the others still run (a store that is down must not
  leave the fonts cold), then the first exception reaches the caller. ``pending()`` and
  ``done()`` tell what is left.
- Registering a name again replaces its init, which is then pending again (an app built twice
  in one process, as tests do, registers its new objects).
- Inits should be idempotent: the app may also call them itself when a request arrives before
  the warm-up.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable

Init = Callable[[], object]


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inits: dict[str, Init] = {}
        self._done: dict[str, float] = {}
        _registries.add(self)

    def register(self, name: str, func: Init) -> None:
        with self._lock:
            if self._inits.get(name) is not func:
                self._inits[name] = func
                self._done.pop(name, None)

    def run_pending(self) -> dict[str, float]:
        """Run every pending init; return the seconds each of them took."""
        ran: dict[str, float] = {}
        failure: Exception | None = None
        with self._lock:
            for name, func in list(self._inits.items()):
                if name in self._done:
                    continue
                start = time.perf_counter()
                try:
                    func()
                except Exception as error:
                    failure = failure or error
                    continue
                ran[name] = self._done[name] = time.perf_counter() - start
        if failure is not None:
            raise failure
        return ran

    def pending(self) -> list[str]:
        with self._lock:
            return [name for name in self._inits if name not in self._done]

    def done(self) -> dict[str, float]:
        with self._lock:
            return dict(self._done)

    def _after_fork_in_child(self) -> None:
        # The lock may have been held by another thread of the parent: it would never be
        # released here.
        self._lock = threading.Lock()
        self._done.clear()


_registries: weakref.WeakSet[Registry] = weakref.WeakSet()


def _reset_children() -> None:
    for registry in list(_registries):
        registry._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_children)

_default = Registry()


def default_registry() -> Registry:
    """The registry behind the module-level functions (the one the warm-up route runs)."""
    return _default


register = _default.register
run_pending = _default.run_pending
pending = _default.pending
done = _default.done
