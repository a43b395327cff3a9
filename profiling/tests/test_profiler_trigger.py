"""Which requests are profiled, and that the others pass through untouched."""

import logging
import random

import pytest
from flask import Flask, after_this_request
from test_profiler_support import TOKEN, HelloApp, call, environ, middleware, profile_ids

from wsgiprobe.profiler import middleware as middleware_module


@pytest.fixture
def app():
    return HelloApp()


@pytest.fixture
def directory(tmp_path):
    return tmp_path / "profiles"


def test_header_with_token_is_profiled(app, directory):
    result = call(middleware(app, directory), headers={"X-Wsgiprobe-Profile": TOKEN})
    assert result.body == b"hello world"
    assert result.status == "200 OK"
    assert len(profile_ids(directory)) == 1
    assert app.bodies[0].closed == 1


def test_cookie_with_token_is_profiled(app, directory):
    cookie = f"session=abc; wsgiprobe_profile={TOKEN}; theme=dark"
    call(middleware(app, directory), headers={"Cookie": cookie})
    assert len(profile_ids(directory)) == 1


def test_quoted_cookie_is_profiled(app, directory):
    call(middleware(app, directory), headers={"Cookie": f'wsgiprobe_profile="{TOKEN}"'})
    assert len(profile_ids(directory)) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Wsgiprobe-Profile": TOKEN + "x"},
        {"X-Wsgiprobe-Profile": TOKEN[:-1]},
        {"X-Wsgiprobe-Profile": ""},
        {"X-Wsgiprobe-Profile": "ünïcode"},
        {"Cookie": "wsgiprobe_profile=wrong"},
        {"Cookie": f"not_wsgiprobe_profile={TOKEN}"},
        {"Cookie": f"wsgiprobe_profile_x={TOKEN}"},
        {"X-Other": TOKEN},
    ],
)
def test_wrong_or_missing_token_is_not_profiled(app, directory, headers):
    result = call(middleware(app, directory), headers=headers)
    assert result.body == b"hello world"
    assert profile_ids(directory) == []


def test_empty_token_never_triggers(app, directory):
    wrapped = middleware(app, directory, token="")
    call(wrapped, headers={"X-Wsgiprobe-Profile": ""})
    call(wrapped, headers={"Cookie": "wsgiprobe_profile="})
    assert profile_ids(directory) == []


def test_sample_rate_zero_never_profiles(app, directory, monkeypatch):
    wrapped = middleware(app, directory, sample_rate=0.0)
    monkeypatch.setattr(wrapped, "_random", lambda: pytest.fail("random() on the fast path"))
    for _ in range(200):
        call(wrapped)
    assert profile_ids(directory) == []


def test_sample_rate_one_always_profiles(app, directory):
    wrapped = middleware(app, directory, token="", sample_rate=1.0)
    for _ in range(20):
        call(wrapped)
    assert len(profile_ids(directory)) == 20


def test_sample_rate_is_a_probability(app, directory):
    random.seed(20240601)
    wrapped = middleware(app, directory, token="", sample_rate=0.1, max_profiles=5)
    for _ in range(2000):
        call(wrapped)
    # 200 expected; 4 standard deviations (13.4 each) either side.
    assert 146 <= wrapped.profiles_saved <= 254


def test_fast_path_passes_through_exactly(app, directory):
    wrapped = middleware(app, directory, sample_rate=0.0)
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, headers

    env = environ(headers={"Cookie": "session=abc"})
    result = wrapped(env, start_response)
    assert result is app.bodies[0]  # the app's own iterable, not a wrapper
    assert seen == {"status": "200 OK", "headers": app.headers}
    assert b"".join(result) == b"hello world"
    result.close()
    assert app.bodies[0].closed == 1
    assert profile_ids(directory) == []


def test_ui_path_prefix_alone_is_not_the_ui(app, directory):
    result = call(middleware(app, directory), "/_profilerx")
    assert result.body == b"hello world"


def test_profiled_response_is_unchanged(app, directory):
    plain = call(app)
    profiled = call(middleware(app, directory), headers={"X-Wsgiprobe-Profile": TOKEN})
    assert (profiled.status, profiled.headers, profiled.body) == (
        plain.status,
        plain.headers,
        plain.body,
    )
    assert app.bodies[1].closed == 1


def test_flask_call_on_close_runs_under_profiling(directory):
    flask_app = Flask(__name__)
    closed = []

    @flask_app.get("/hello")
    def hello():
        @after_this_request
        def on_close(response):
            response.call_on_close(lambda: closed.append(True))
            return response

        return "hi"

    result = call(middleware(flask_app, directory), headers={"X-Wsgiprobe-Profile": TOKEN})
    assert result.body == b"hi"
    assert closed == [True]
    assert len(profile_ids(directory)) == 1


def test_app_exception_is_raised_and_profile_kept(directory):
    def broken(environ, start_response):
        raise ZeroDivisionError("boom")

    wrapped = middleware(broken, directory)
    with pytest.raises(ZeroDivisionError):
        call(wrapped, headers={"X-Wsgiprobe-Profile": TOKEN})
    (profile_id,) = profile_ids(directory)
    assert '"error": "ZeroDivisionError"' in (directory / f"{profile_id}.json").read_text()
    # The lock was released: the next request is profiled too.
    with pytest.raises(ZeroDivisionError):
        call(wrapped, headers={"X-Wsgiprobe-Profile": TOKEN})
    assert len(profile_ids(directory)) == 2


def test_log_line_has_context_but_no_secrets(app, directory, caplog):
    caplog.set_level(logging.DEBUG, logger="wsgiprobe.profiler")
    call(
        middleware(app, directory),
        "/hello",
        query="password=hunter2",
        headers={"X-Wsgiprobe-Profile": TOKEN, "Authorization": "Basic c2VjcmV0"},
    )
    saved = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(saved) == 1
    line = saved[0].getMessage()
    for part in ("worker=", "method=GET", "'/hello'", "status=200", "ms=", ".pkl"):
        assert part in line
    text = caplog.text
    assert TOKEN not in text and "c2VjcmV0" not in text and "hunter2" not in text


def test_failed_save_does_not_fail_the_request(app, directory, monkeypatch, caplog):
    wrapped = middleware(app, directory)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wrapped.store, "save", full_disk)
    result = call(wrapped, headers={"X-Wsgiprobe-Profile": TOKEN})
    assert result.body == b"hello world"
    assert "profile not saved" in caplog.text
    assert middleware_module._PROFILE_LOCK.acquire(blocking=False)
    middleware_module._PROFILE_LOCK.release()
