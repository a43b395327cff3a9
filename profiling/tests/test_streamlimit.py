import json
import sys
import types

import pytest

from wsgiprobe import compose
from wsgiprobe.securecookies import SecureCookies
from wsgiprobe.streamlimit import StreamLimit


class Stream:
    """A response the test closes when it likes, as the server does at a stream's end."""

    def __init__(self) -> None:
        self.closed = 0

    def __iter__(self):
        yield b"data: 1\n\n"

    def close(self) -> None:
        self.closed += 1


def streaming_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/event-stream")])
    return Stream()


def call(app):
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    body = app({"REQUEST_METHOD": "GET", "PATH_INFO": "/events"}, start_response)
    return seen["status"], seen["headers"], body


def test_beyond_the_limit_a_request_gets_503_with_retry_after_and_json():
    gate = StreamLimit(streaming_app, limit=2, retry_after=5)
    held = [call(gate) for _ in range(2)]
    assert [status for status, _, _ in held] == ["200 OK", "200 OK"]
    status, headers, body = call(gate)
    assert status == "503 Service Unavailable"
    assert headers["Retry-After"] == "5"
    assert headers["Content-Type"] == "application/json"
    answer = json.loads(b"".join(body))
    assert answer["error"] == "unavailable"
    assert int(headers["Content-Length"]) == len(b"".join(body))
    assert gate.open == 2  # a refusal takes no slot


def test_a_closed_stream_frees_its_slot_once_and_closes_the_apps_response():
    gate = StreamLimit(streaming_app, limit=1, retry_after=5)
    _, _, first = call(gate)
    assert call(gate)[0].startswith("503")
    assert list(first) == [b"data: 1\n\n"]
    first.close()
    first.close()  # a server may close twice; the slot is freed once
    assert first._response.closed == 2
    assert gate.open == 0
    status, _, _ = call(gate)
    assert status == "200 OK"
    assert gate.open == 1


def test_an_app_that_raises_frees_its_slot():
    def failing(environ, start_response):
        raise RuntimeError("boom")

    gate = StreamLimit(failing, limit=1, retry_after=5)
    with pytest.raises(RuntimeError):
        call(gate)
    assert gate.open == 0


def test_a_response_without_close_is_counted_until_the_server_closes_it():
    def plain(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    gate = StreamLimit(plain, limit=1, retry_after=5)
    _, _, body = call(gate)
    assert gate.open == 1
    body.close()
    assert gate.open == 0


@pytest.mark.parametrize("limit, retry_after", [(0, 5), (1, 0)])
def test_a_bound_below_one_is_refused(limit, retry_after):
    with pytest.raises(ValueError):
        StreamLimit(streaming_app, limit, retry_after)


@pytest.fixture
def stream_module(monkeypatch):
    module = types.ModuleType("fake_stream_mod")
    module.app = streaming_app
    monkeypatch.setitem(sys.modules, "fake_stream_mod", module)


def test_a_stream_pool_process_gets_the_app_and_its_bound_only(stream_module):
    env = {
        "WSGIPROBE_APP": "fake_stream_mod:app",
        "WSGIPROBE_STREAM_LIMIT": "3",
        # What the request workers' env file also holds: not for a stream pool.
        "WSGIPROBE_PROFILER": "1",
        "WSGIPROBE_PROFILER_TOKEN": "x" * 32,
    }
    app = compose.build_application(env)
    assert isinstance(app, StreamLimit)
    assert app.limit == 3 and app.retry_after == compose.STREAM_RETRY_AFTER
    # The app, its cookies Secure over HTTPS, and nothing else.
    assert isinstance(app.app, SecureCookies) and app.app.app is streaming_app


@pytest.mark.parametrize("raw", ["0", "-1", "many"])
def test_a_bad_stream_limit_is_a_clear_error(stream_module, raw):
    env = {"WSGIPROBE_APP": "fake_stream_mod:app", "WSGIPROBE_STREAM_LIMIT": raw}
    with pytest.raises(ValueError, match="WSGIPROBE_STREAM_LIMIT"):
        compose.build_application(env)
