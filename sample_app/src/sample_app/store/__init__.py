"""Pick the store backend from STORE_URL."""

from __future__ import annotations

from ..config import sqlite_path
from .base import Store, StoreUnavailable
from .redis import RedisStore
from .sqlite import SQLiteStore

__all__ = ["RedisStore", "SQLiteStore", "Store", "StoreUnavailable", "open_store"]


def open_store(url: str) -> Store:
    """A store for ``url`` (already validated by config); nothing connects until first use."""
    if url.startswith("sqlite:"):
        return SQLiteStore(sqlite_path(url))
    return RedisStore(url)
