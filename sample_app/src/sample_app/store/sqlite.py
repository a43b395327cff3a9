"""SQLite backend: one database file shared by every worker process of one host.

WAL lets readers run while one writer writes; busy_timeout makes writers queue instead of
failing at once. Each thread of each process has its own connection (sqlite3 connections must
not cross threads, nor a fork).
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .base import COUNTERS, Store, StoreUnavailable, window_bounds

SCHEMA = """
CREATE TABLE IF NOT EXISTS captchas (id TEXT PRIMARY KEY, answer TEXT NOT NULL,
                                     expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rate_windows (key TEXT PRIMARY KEY, count INTEGER NOT NULL,
                                         expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
PURGE_EVERY = 64  # writes between two purges of expired rows

# Connections a forked child inherited. Closing one in the child could checkpoint or delete the
# WAL under the parent's feet, and dropping it closes it: keep them referenced, unused.
_inherited: list[sqlite3.Connection] = []


class SQLiteStore(Store):
    def __init__(self, path: str, clock: Callable[[], float] = time.time, timeout: float = 5.0):
        self.path = path
        self.clock = clock  # injectable so tests can expire captchas without sleeping
        self.timeout = timeout
        self._local = threading.local()
        self._writes = itertools.count(1)

    def _connection(self) -> sqlite3.Connection:
        pid, conn = getattr(self._local, "conn", (None, None))
        if conn is not None and pid == os.getpid():
            return conn
        if conn is not None:
            _inherited.append(conn)
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(SCHEMA)
        except sqlite3.Error as error:
            raise StoreUnavailable(f"sqlite {self.path}: {error}") from error
        self._local.conn = (os.getpid(), conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before the first read so that it never races."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreUnavailable(f"sqlite {self.path}: {error}") from error

    def _read(self, sql: str, args: tuple[object, ...]) -> list[Any]:
        try:
            return self._connection().execute(sql, args).fetchall()
        except sqlite3.Error as error:
            raise StoreUnavailable(f"sqlite {self.path}: {error}") from error

    def put(self, captcha_id: str, answer: str, ttl: int) -> None:
        now = self.clock()
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO captchas (id, answer, expires) VALUES (?, ?, ?)",
                (captcha_id, answer, now + ttl),
            )
            if next(self._writes) % PURGE_EVERY == 0:
                # Expired rows are never read again; purge them now and then, not per request.
                conn.execute("DELETE FROM captchas WHERE expires <= ?", (now,))
                conn.execute("DELETE FROM rate_windows WHERE expires <= ?", (now,))

    def peek(self, captcha_id: str) -> str | None:
        rows = self._read(
            "SELECT answer FROM captchas WHERE id = ? AND expires > ?", (captcha_id, self.clock())
        )
        return str(rows[0][0]) if rows else None

    def take(self, captcha_id: str) -> str | None:
        with self._write() as conn:
            rows = conn.execute(
                "DELETE FROM captchas WHERE id = ? RETURNING answer, expires", (captcha_id,)
            ).fetchall()
        if not rows or float(rows[0][1]) <= self.clock():
            return None
        return str(rows[0][0])

    def hit(self, bucket: str, client: str, limit: int, window: int) -> tuple[bool, int]:
        now = self.clock()
        index, retry_after = window_bounds(now, window)
        with self._write() as conn:
            (count,) = conn.execute(
                "INSERT INTO rate_windows (key, count, expires) VALUES (?, 1, ?) "
                "ON CONFLICT (key) DO UPDATE SET count = count + 1 RETURNING count",
                (f"{bucket}:{client}:{window}:{index}", (index + 1) * window),
            ).fetchone()
        return count <= limit, retry_after

    def incr(self, counter: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO counters (name, value) VALUES (?, 1) "
                "ON CONFLICT (name) DO UPDATE SET value = value + 1",
                (counter,),
            )

    def counters(self) -> dict[str, int]:
        values = dict.fromkeys(COUNTERS, 0)
        for name, value in self._read("SELECT name, value FROM counters", ()):
            values[str(name)] = int(value)
        return values

    def ping(self) -> None:
        self._read("SELECT 1", ())
