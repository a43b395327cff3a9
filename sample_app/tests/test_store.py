"""The store contract, on both backends (a real SQLite file, a real redis-server)."""

import threading
import time

import pytest

from sample_app.store import SQLiteStore, StoreUnavailable, open_store
from sample_app.store.base import window_bounds


def test_put_then_peek_does_not_consume(store):
    store.put("a" * 22, "ABCDE", 60)
    assert store.peek("a" * 22) == "ABCDE"
    assert store.peek("a" * 22) == "ABCDE"


def test_take_returns_the_answer_once(store):
    store.put("a" * 22, "ABCDE", 60)
    assert store.take("a" * 22) == "ABCDE"
    assert store.take("a" * 22) is None
    assert store.peek("a" * 22) is None


def test_unknown_ids_are_absent(store):
    assert store.peek("nope") is None
    assert store.take("nope") is None


def test_answers_expire(store):
    store.put("short", "ABCDE", 1)
    store.put("long", "FGHJK", 60)
    time.sleep(1.1)
    assert store.peek("short") is None
    assert store.take("short") is None
    assert store.take("long") == "FGHJK"


def test_sqlite_expiry_follows_its_clock(tmp_path):
    now = [1000.0]
    store = SQLiteStore(str(tmp_path / "s.db"), clock=lambda: now[0])
    store.put("x", "ABCDE", 300)
    now[0] += 299
    assert store.peek("x") == "ABCDE"
    now[0] += 1
    assert store.peek("x") is None
    assert store.take("x") is None


def test_sqlite_purges_expired_rows(tmp_path):
    now = [1000.0]
    store = SQLiteStore(str(tmp_path / "s.db"), clock=lambda: now[0])
    store.put("old", "ABCDE", 1)
    now[0] += 10
    for i in range(64):
        store.put(f"new{i}", "ABCDE", 60)
    conn = store._connection()
    assert conn.execute("SELECT count(*) FROM captchas WHERE id = 'old'").fetchone() == (0,)


def test_rate_limit_counts_per_client_and_bucket(store):
    results = [store.hit("create", "1.2.3.4", 3, 60) for _ in range(4)]
    assert [allowed for allowed, _ in results] == [True, True, True, False]
    assert all(1 <= retry_after <= 60 for _, retry_after in results)
    assert store.hit("create", "5.6.7.8", 3, 60)[0]
    assert store.hit("verify", "1.2.3.4", 3, 60)[0]


def test_rate_limit_window_ends(store):
    assert store.hit("b", "c", 1, 1)[0]
    allowed, retry_after = store.hit("b", "c", 1, 1)
    if allowed:  # the second call fell into the next one-second window: try again
        allowed, retry_after = store.hit("b", "c", 1, 1)
    assert not allowed
    assert retry_after == 1
    time.sleep(1.05)
    assert store.hit("b", "c", 1, 1)[0]


def test_window_bounds_are_aligned_and_at_least_one_second():
    assert window_bounds(120.0, 60) == (2, 60)
    assert window_bounds(179.2, 60) == (2, 1)
    assert window_bounds(179.99, 60) == (2, 1)


def test_counters(store):
    assert store.counters() == {"issued": 0, "verified": 0, "rejected": 0}
    store.incr("issued")
    store.incr("issued")
    store.incr("rejected")
    assert store.counters() == {"issued": 2, "verified": 0, "rejected": 1}


def test_ping(store):
    store.ping()


def test_take_is_atomic_across_threads(store):
    store.put("contested", "ABCDE", 60)
    barrier = threading.Barrier(32)
    results = []

    def worker():
        barrier.wait()
        results.append(store.take("contested"))

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results, key=str) == ["ABCDE"] + [None] * 31


def test_rate_limit_is_exact_across_threads(store):
    barrier = threading.Barrier(16)
    results = []

    def worker():
        barrier.wait()
        for _ in range(5):
            results.append(store.hit("bucket", "client", 40, 3600)[0])

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 40


@pytest.mark.parametrize(
    "url", ["sqlite:////nonexistent-dir/x.db", "unix:///nonexistent-dir/redis.sock"]
)
def test_unreachable_backend_raises_store_unavailable(url):
    store = open_store(url)
    for call in (store.ping, lambda: store.put("x", "y", 1), lambda: store.take("x")):
        with pytest.raises(StoreUnavailable):
            call()
