"""Fixtures: a real redis-server started by the tests, a real SQLite file, app factories."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from captcha_testlib import ORACLE
from sample_app import create_app
from sample_app.store import Store, open_store

BACKENDS = ["sqlite", "redis"]


class RedisServer:
    """A redis-server on a unix socket only (--port 0): no TCP port to collide with."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", "0", "--unixsocket", str(self.socket)),
                *("--save", "", "--appendonly", "no", "--dir", str(self.socket.parent)),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(self.socket))
                return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError("redis-server exited at start") from None
                time.sleep(0.02)
        raise RuntimeError("redis-server did not open its socket within 10 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def flush(self) -> None:
        with redis.Redis(unix_socket_path=str(self.socket)) as client:
            client.flushall()


def _require_redis_server() -> None:
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    _require_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test alone, which it may stop and start again."""
    _require_redis_server()
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flush()
    return server.url


@pytest.fixture
def store(store_url: str) -> Store:
    return open_store(store_url)


AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(store_url: str) -> AppFactory:
    """create_app with the test's store and generous limits; keyword arguments override."""

    def make(**config: Any) -> Flask:
        base = {
            "SECRET_KEY": "test",
            "TESTING": True,
            "STORE_URL": store_url,
            "RATE_LIMIT_CREATE": "1000/60",
            "RATE_LIMIT_VERIFY": "1000/60",
        }
        return create_app(base | config)

    return make


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app(CAPTCHA_ORACLE_SECRET=ORACLE)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
