"""Server-Sent Events: the counters, every EVENTS_INTERVAL seconds, for a bounded time.

The stream ends after EVENTS_MAX_SECONDS (EventSource reconnects by itself): an endless stream
would hold its slot for as long as the browser tab stays open. Deployed, nginx passes /events
to the stream pool (gevent workers, app_stream_paths), never to the request workers; run under
a sync worker alone (flask run, a plain gunicorn), each stream holds that worker.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

from flask import Blueprint, Response

from .payloads import non_negative_number_arg
from .state import current
from .store import Store, StoreUnavailable

bp = Blueprint("events", __name__)

_lock = threading.Lock()
_open = 0


def open_streams() -> int:
    """Streams of this process not closed yet (a stream held forever would leak a worker)."""
    return _open


def _opened() -> None:
    global _open
    with _lock:
        _open += 1


def _closed() -> None:
    global _open
    with _lock:
        _open -= 1


def _stats(counters: dict[str, int]) -> str:
    return f"event: stats\ndata: {json.dumps(counters, separators=(',', ':'))}\n\n"


def _stream(store: Store, first: dict[str, int], interval: float, seconds: float) -> Iterator[str]:
    deadline = time.monotonic() + seconds
    yield "retry: 2000\n\n"
    yield _stats(first)
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(interval, remaining))
        try:
            yield _stats(store.counters())
        except StoreUnavailable:
            yield ": store unavailable\n\n"  # a comment: keeps the stream alive, no event


@bp.get("/events")
def events() -> Response:
    asked = non_negative_number_arg("max_seconds")  # a bad value: 400 before anything else
    state = current()
    seconds = state.settings.events_max_seconds
    if asked is not None:
        seconds = min(seconds, asked)  # may shorten the stream, never lengthen it
    first = state.store.counters()  # store down: a 503 now rather than a broken stream
    response = Response(
        _stream(state.store, first, state.settings.events_interval, seconds),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    _opened()
    closed = threading.Event()

    def release() -> None:
        if not closed.is_set():
            closed.set()
            _closed()

    response.call_on_close(release)
    return response
