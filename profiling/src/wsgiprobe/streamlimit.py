"""The bound of a stream pool's process: at most ``limit`` responses open at once.

A stream pool (app servers on cooperative workers, behind nginx's stream locations) serves
long responses, each holding a connection and a greenlet for its whole life. Beyond the bound,
a request gets ``503`` with ``Retry-After`` at once, rather than waiting in the listen queue
while every earlier stream runs to its end. A response counts from the call until the server
closes it (the WSGI ``close()``), which it does whether the client read it all or went away.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

BUSY_BODY = json.dumps(
    {"error": "unavailable", "message": "This server holds as many streams as it can."}
).encode()


class StreamLimit:
    def __init__(self, app: WSGIApp, limit: int, retry_after: int) -> None:
        if limit < 1 or retry_after < 1:
            raise ValueError(f"limit and retry_after must be >= 1, got {limit}, {retry_after}")
        self.app, self.limit, self.retry_after = app, limit, retry_after
        self._lock = threading.Lock()
        self._open = 0

    @property
    def open(self) -> int:
        return self._open

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        with self._lock:
            full = self._open >= self.limit
            if not full:
                self._open += 1
        if full:
            start_response(
                "503 Service Unavailable",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(BUSY_BODY))),
                    ("Retry-After", str(self.retry_after)),
                ],
            )
            return [BUSY_BODY]
        try:
            return _Counted(self.app(environ, start_response), self._release)
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        with self._lock:
            self._open -= 1


class _Counted:
    """The app's response, passed through; its close() releases the slot, once."""

    def __init__(self, response: Iterable[bytes], release: Callable[[], None]) -> None:
        self._response, self._release = response, release
        self._released = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._response)

    def close(self) -> None:
        try:
            close = getattr(self._response, "close", None)
            if close is not None:
                close()
        finally:
            if not self._released:
                self._released = True
                self._release()
