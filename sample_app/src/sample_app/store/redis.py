"""Redis backend: shared by every worker process of every host that points at the server.

One client per process, made on first use: a client made before the app server forks must not
be shared by its workers. redis-py reconnects by itself after the server comes back.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .base import COUNTERS, Store, StoreUnavailable, window_bounds

PREFIX = "sample_app:"


class RedisStore(Store):
    def __init__(self, url: str, timeout: float = 2.0):
        self.url = url
        self.timeout = timeout
        self._lock = threading.Lock()
        self._pid = 0
        self._client: redis.Redis | None = None

    def _redis(self) -> redis.Redis:
        client = self._client
        if client is not None and self._pid == os.getpid():
            return client
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = redis.Redis.from_url(
                    self.url,
                    decode_responses=True,
                    socket_timeout=self.timeout,
                    socket_connect_timeout=self.timeout,
                    # One immediate retry replaces a connection the server dropped (restart);
                    # the default backoff would hold a request for seconds while it is down.
                    retry=Retry(NoBackoff(), 1),
                    health_check_interval=30,
                )
                self._pid = os.getpid()
            return self._client

    def put(self, captcha_id: str, answer: str, ttl: int) -> None:
        with _unavailable_on_error():
            self._redis().set(f"{PREFIX}captcha:{captcha_id}", answer, ex=ttl)

    def peek(self, captcha_id: str) -> str | None:
        with _unavailable_on_error():
            return self._redis().get(f"{PREFIX}captcha:{captcha_id}")

    def take(self, captcha_id: str) -> str | None:
        with _unavailable_on_error():
            return self._redis().getdel(f"{PREFIX}captcha:{captcha_id}")

    def hit(self, bucket: str, client: str, limit: int, window: int) -> tuple[bool, int]:
        index, retry_after = window_bounds(time.time(), window)
        key = f"{PREFIX}rate:{bucket}:{client}:{window}:{index}"
        with _unavailable_on_error():
            pipe = self._redis().pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, window + 1)  # the key names its window: it only has to outlive it
            count, _ = pipe.execute()
        return int(count) <= limit, retry_after

    def incr(self, counter: str) -> None:
        with _unavailable_on_error():
            self._redis().incr(f"{PREFIX}counter:{counter}")

    def counters(self) -> dict[str, int]:
        with _unavailable_on_error():
            values = self._redis().mget([f"{PREFIX}counter:{name}" for name in COUNTERS])
        return {name: int(value or 0) for name, value in zip(COUNTERS, values, strict=True)}

    def ping(self) -> None:
        with _unavailable_on_error():
            self._redis().ping()


@contextmanager
def _unavailable_on_error() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as error:
        raise StoreUnavailable(f"redis: {error}") from error
