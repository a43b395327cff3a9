"""Bodies are never buffered, event streams pass through, and one profile runs at a time."""

import gc
import threading

import pytest
from flask import Flask, Response
from test_profiler_support import TOKEN, Body, HelloApp, call, environ, middleware
from test_profiler_support import profile_ids as ids

from wsgiprobe.profiler import middleware as middleware_module

TRIGGER = {"X-Wsgiprobe-Profile": TOKEN}


@pytest.fixture
def directory(tmp_path):
    return tmp_path / "profiles"


def ignore_start_response(status, headers, exc_info=None):
    return lambda data: None


def lock_is_free():
    if middleware_module._PROFILE_LOCK.acquire(blocking=False):
        middleware_module._PROFILE_LOCK.release()
        return True
    return False


class GatedStream:
    """Yields one chunk, then the next only once the test has read it (released)."""

    def __init__(self, content_type, lazy=False):
        self.content_type = content_type
        self.lazy = lazy
        self.released = threading.Event()
        self.produced = []
        self.closed = False

    def __call__(self, env, start_response):
        if not self.lazy:
            start_response("200 OK", [("Content-Type", self.content_type)])
        return self._events(start_response)

    def _events(self, start_response):
        try:
            if self.lazy:  # start_response at the first next(), as generator apps may do
                start_response("200 OK", [("Content-Type", self.content_type)])
            self.produced.append(1)
            yield b"data: 1\n\n"
            assert self.released.wait(5), "the first chunk was not read before the second"
            self.produced.append(2)
            yield b"data: 2\n\n"
        finally:
            self.closed = True


@pytest.mark.parametrize("lazy", [False, True])
def test_event_stream_passes_through_unbuffered(directory, lazy):
    app = GatedStream("text/event-stream; charset=utf-8", lazy=lazy)
    wrapped = middleware(app, directory)
    body = wrapped(environ(headers=TRIGGER), ignore_start_response)
    iterator = iter(body)
    assert next(iterator) == b"data: 1\n\n"
    assert app.produced == [1]  # read before the second chunk exists
    if lazy:
        assert lock_is_free()  # profiling stopped as soon as the stream showed itself
    app.released.set()
    assert next(iterator) == b"data: 2\n\n"
    with pytest.raises(StopIteration):
        next(iterator)
    body.close()
    assert app.closed
    assert ids(directory) == []
    assert lock_is_free()


def test_event_stream_close_mid_stream_reaches_app(directory):
    app = GatedStream("text/event-stream")
    body = middleware(app, directory)(environ(headers=TRIGGER), ignore_start_response)
    assert next(iter(body)) == b"data: 1\n\n"
    body.close()  # the client went away
    assert app.closed
    assert lock_is_free()


def test_flask_event_stream(directory):
    flask_app = Flask(__name__)
    released = threading.Event()
    closed = []

    @flask_app.get("/events")
    def events():
        def stream():
            yield "data: 1\n\n"
            assert released.wait(5)
            yield "data: 2\n\n"

        response = Response(stream(), mimetype="text/event-stream")
        response.call_on_close(lambda: closed.append(True))
        return response

    body = middleware(flask_app, directory)(
        environ("/events", headers=TRIGGER), ignore_start_response
    )
    iterator = iter(body)
    assert next(iterator) == b"data: 1\n\n"
    released.set()
    assert b"".join(iterator) == b"data: 2\n\n"
    body.close()
    assert closed == [True]
    assert ids(directory) == []


def test_other_streams_are_profiled_without_buffering(directory):
    app = GatedStream("text/plain")
    wrapped = middleware(app, directory)
    body = wrapped(environ(headers=TRIGGER), ignore_start_response)
    iterator = iter(body)
    assert next(iterator) == b"data: 1\n\n"
    assert app.produced == [1]
    app.released.set()
    assert b"".join(iterator) == b"data: 2\n\n"
    assert ids(directory) == []  # saved at close(), once the client has everything
    body.close()
    assert app.closed
    (profile_id,) = ids(directory)
    assert b"_events" in (directory / f"{profile_id}.pkl").read_bytes()


def test_close_is_called_once_and_its_error_propagates(directory):
    class FailingClose(Body):
        def close(self):
            super().close()
            raise RuntimeError("close failed")

    bodies = []

    def app(env, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        bodies.append(FailingClose([b"x"]))
        return bodies[-1]

    wrapped = middleware(app, directory)
    with pytest.raises(RuntimeError, match="close failed"):
        call(wrapped, headers=TRIGGER)
    assert bodies[0].closed == 1
    assert len(ids(directory)) == 1
    assert lock_is_free()


def test_body_dropped_without_close_frees_the_lock(directory):
    wrapped = middleware(HelloApp(), directory)
    body = wrapped(environ(headers=TRIGGER), ignore_start_response)
    assert not lock_is_free()
    del body
    gc.collect()
    assert lock_is_free()
    call(wrapped, headers=TRIGGER)
    assert len(ids(directory)) == 1


def test_one_profile_at_a_time_per_process(directory):
    entered, release = threading.Event(), threading.Event()

    def app(env, start_response):
        if env["PATH_INFO"] == "/slow":
            entered.set()
            assert release.wait(5)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [env["PATH_INFO"].encode()]

    wrapped = middleware(app, directory)
    results = {}
    slow = threading.Thread(
        target=lambda: results.update(slow=call(wrapped, "/slow", headers=TRIGGER))
    )
    slow.start()
    try:
        assert entered.wait(5)
        # A second triggered request while the first is being profiled: served, not profiled.
        fast = call(wrapped, "/fast", headers=TRIGGER)
        assert (fast.status, fast.body) == ("200 OK", b"/fast")
        assert wrapped.busy_skips == 1
        assert ids(directory) == []
    finally:
        release.set()
        slow.join(5)
    assert (results["slow"].status, results["slow"].body) == ("200 OK", b"/slow")
    assert wrapped.profiles_saved == 1
    (profile_id,) = ids(directory)
    assert b"/slow" in (directory / f"{profile_id}.json").read_bytes()
    assert lock_is_free()


def test_another_profiler_active_serves_unprofiled(directory, monkeypatch):
    class Busy(middleware_module.cProfile.Profile):
        def enable(self, *args, **kwargs):
            raise ValueError("Another profiling tool is already active")  # Python 3.12+

    monkeypatch.setattr(middleware_module.cProfile, "Profile", Busy)
    app = HelloApp()
    result = call(middleware(app, directory), headers=TRIGGER)
    assert result.body == b"hello world"
    assert app.bodies[0].closed == 1
    assert ids(directory) == []
    assert lock_is_free()
