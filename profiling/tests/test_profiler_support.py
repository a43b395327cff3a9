"""Helpers shared by the test_profiler_* modules (no tests here)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import create_environ

from wsgiprobe import workers
from wsgiprobe.profiler import ProfilerSettings, ProfilingMiddleware

TOKEN = "t0k3n-for-the-tests-0123456789"
WORKER = {"server": "uwsgi", "worker": 3, "pid": 4242}


def settings(directory: Path, **overrides: Any) -> ProfilerSettings:
    values: dict[str, Any] = {"directory": directory, "token": TOKEN}
    values.update(overrides)
    return ProfilerSettings(**values)


def middleware(app: Any, directory: Path, **overrides: Any) -> ProfilingMiddleware:
    return ProfilingMiddleware(app, settings(directory, **overrides))


def pretend_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if a uWSGI worker 3 with pid 4242 served the request."""
    monkeypatch.setattr(workers, "describe", lambda: dict(WORKER))


class Body:
    """A response body that records whether the server closed it."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = list(chunks)
        self.closed = 0

    def __iter__(self):
        return iter(self.chunks)

    def close(self) -> None:
        self.closed += 1


@dataclass
class HelloApp:
    """A tiny WSGI app; each call's body is kept to check close()."""

    status: str = "200 OK"
    headers: list[tuple[str, str]] = field(
        default_factory=lambda: [("Content-Type", "text/plain"), ("X-App", "hello")]
    )
    chunks: tuple[bytes, ...] = (b"hello ", b"world")
    bodies: list[Body] = field(default_factory=list)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Body:
        start_response(self.status, list(self.headers))
        body = Body(self.chunks)
        self.bodies.append(body)
        return body


@dataclass
class Result:
    status: str
    headers: list[tuple[str, str]]
    body: bytes
    app_iter: Any


def environ(
    path: str = "/hello",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    query: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A request's environ; extra adds keys a server sets (REQUEST_URI, RAW_URI...)."""
    env = create_environ(path, method=method, headers=headers, query_string=query)
    env["wsgi.multiprocess"] = True  # as under uWSGI/gunicorn with several workers
    env.update(extra or {})
    return env


def call(app: Any, path: str = "/hello", **kwargs: Any) -> Result:
    """Run one request the way a WSGI server does: call, iterate, close."""
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
        seen["status"], seen["headers"] = status, headers
        return lambda data: None

    app_iter = app(environ(path, **kwargs), start_response)
    try:
        body = b"".join(app_iter)
    finally:
        if hasattr(app_iter, "close"):
            app_iter.close()
    return Result(seen["status"], seen["headers"], body, app_iter)


def profile_ids(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.pkl"))
