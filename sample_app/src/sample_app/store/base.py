"""The store interface: captchas with a TTL, rate-limit windows and counters.

Every method is safe to call from many threads and processes at once. Backend errors (server
down, database locked for too long) raise ``StoreUnavailable``; callers answer 503.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

COUNTERS = ("issued", "verified", "rejected")


class StoreUnavailable(Exception):
    """The backend did not answer; a later call may succeed (nothing is cached broken)."""


class Store(ABC):
    @abstractmethod
    def put(self, captcha_id: str, answer: str, ttl: int) -> None:
        """Store an answer that expires after ``ttl`` seconds."""

    @abstractmethod
    def peek(self, captcha_id: str) -> str | None:
        """The answer, or None if unknown or expired; does not consume it."""

    @abstractmethod
    def take(self, captcha_id: str) -> str | None:
        """Atomically get and delete: of concurrent callers, at most one gets the answer."""

    @abstractmethod
    def hit(self, bucket: str, client: str, limit: int, window: int) -> tuple[bool, int]:
        """Count one request in the client's current fixed window of ``window`` seconds.

        Returns (allowed, retry_after): allowed while the window's count is at most ``limit``;
        retry_after is the whole seconds (>= 1) until the window ends.
        """

    @abstractmethod
    def incr(self, counter: str) -> None:
        """Add one to a named counter (one of COUNTERS)."""

    @abstractmethod
    def counters(self) -> dict[str, int]:
        """Every counter in COUNTERS, 0 if never incremented."""

    @abstractmethod
    def ping(self) -> None:
        """Raise StoreUnavailable unless the backend answers."""


def window_bounds(now: float, window: int) -> tuple[int, int]:
    """(index, retry_after) of the fixed window holding ``now``.

    Windows are aligned on multiples of ``window`` since the epoch, so every process (and
    every host with a synchronised clock) agrees on them without coordination.
    """
    index = int(now // window)
    return index, max(1, math.ceil((index + 1) * window - now))
