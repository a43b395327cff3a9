"""What a profile holds on disk, scrubbing, and the bounds on the shared directory."""

import json
import multiprocessing
import os
import pickle
import time

import pytest
from test_profiler_support import TOKEN, WORKER, HelloApp, call, middleware, pretend_worker
from test_profiler_support import profile_ids as ids

from wsgiprobe.profiler import storage

TRIGGER = {"X-Wsgiprobe-Profile": TOKEN}


@pytest.fixture
def directory(tmp_path):
    return tmp_path / "profiles"


def load(directory, profile_id):
    return pickle.loads((directory / f"{profile_id}.pkl").read_bytes())


def test_saved_profile_has_dozer_format_and_context(directory, monkeypatch):
    pretend_worker(monkeypatch)
    call(
        middleware(HelloApp(status="201 Created"), directory),
        "/items",
        method="POST",
        query="page=2",
        headers=TRIGGER,
    )
    (profile_id,) = ids(directory)
    assert profile_id.endswith("_w3_p4242_" + profile_id.rsplit("_", 1)[1])
    data = load(directory, profile_id)
    assert {"time", "profile", "environ"} <= data.keys()  # what Dozer's pages read
    assert data["environ"]["PATH_INFO"] == "/items"
    assert data["environ"]["QUERY_STRING"] == "page=2"
    assert any("HelloApp.__call__" in key or "__call__" in key for key in data["profile"])
    record = data["wsgiprobe"]
    assert record["worker"] == WORKER["worker"]
    assert record["pid"] == WORKER["pid"]
    assert record["server"] == "uwsgi"
    assert record["method"] == "POST"
    assert record["path"] == "/items"
    assert record["query"] == "page=2"
    assert record["status"] == 201
    assert record["duration_ms"] > 0
    assert json.loads((directory / f"{profile_id}.json").read_text()) == record
    # Private files, and no temp file left behind.
    for path in directory.iterdir():
        assert not path.name.startswith(".tmp-")
        assert path.stat().st_mode & 0o077 == 0


def test_secrets_are_scrubbed(directory):
    wrapped = middleware(HelloApp(), directory, scrub_headers=("X-Captcha-Oracle",))
    call(
        wrapped,
        headers={
            **TRIGGER,
            "Cookie": "session=cookie-secret",
            "Authorization": "Bearer auth-secret",
            "Proxy-Authorization": "Basic proxy-secret",
            "X-Captcha-Oracle": "oracle-secret",
            "User-Agent": "kept-agent",
        },
    )
    (profile_id,) = ids(directory)
    raw = (directory / f"{profile_id}.pkl").read_bytes()
    raw += (directory / f"{profile_id}.json").read_bytes()
    for secret in (
        TOKEN,
        "cookie-secret",
        "auth-secret",
        "proxy-secret",
        "oracle-secret",
        "X_WSGIPROBE_PROFILE",
        "HTTP_COOKIE",
        "HTTP_AUTHORIZATION",
        "HTTP_X_CAPTCHA_ORACLE",
    ):
        assert secret.encode() not in raw, secret
    saved = load(directory, profile_id)["environ"]
    assert saved["HTTP_USER_AGENT"] == "kept-agent"
    assert not any(key.startswith("wsgi") for key in saved)
    assert all(isinstance(value, str) for value in saved.values())


def test_retention_by_count_removes_oldest_first(directory):
    wrapped = middleware(HelloApp(), directory, max_profiles=3)
    made = []
    for _ in range(5):
        before = set(ids(directory))
        call(wrapped, headers=TRIGGER)
        made.extend(set(ids(directory)) - before)
    assert len(made) == 5
    assert ids(directory) == sorted(made[-3:])
    assert len(list(directory.glob("*.json"))) == 3


def test_retention_by_size_removes_oldest_first(directory):
    wrapped = middleware(HelloApp(), directory)
    call(wrapped, headers=TRIGGER)
    one = sum(p.stat().st_size for p in directory.iterdir() if not p.name.startswith("."))
    # Room for 2.5 profiles of this size.
    wrapped = middleware(HelloApp(), directory, max_mb=2.5 * one / (1024 * 1024))
    made = []
    for _ in range(4):
        before = set(ids(directory))
        call(wrapped, headers=TRIGGER)
        made.extend(set(ids(directory)) - before)
    assert ids(directory) == sorted(made[-2:])
    size = sum(p.stat().st_size for p in directory.iterdir() if not p.name.startswith("."))
    assert size <= wrapped.settings.max_bytes


def test_oldest_by_mtime_then_name(directory):
    store = storage.ProfileStore(directory, max_profiles=2, max_bytes=10**9)
    store.prepare()
    now = time.time()
    for name, age in [("b", 100), ("a", 100), ("c", 50), ("d", 0)]:
        for suffix in (".pkl", ".json", ".gv"):
            path = directory / f"{name}{suffix}"
            path.write_text("{}")
            os.utime(path, (now - age, now - age))
    assert store.prune() == ["a", "b"]
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) == [
        "c.gv",
        "c.json",
        "c.pkl",
        "d.gv",
        "d.json",
        "d.pkl",
    ]


def test_stale_temp_files_are_removed_and_foreign_files_kept(directory):
    store = storage.ProfileStore(directory, max_profiles=1, max_bytes=10**9)
    store.prepare()
    stale = directory / ".tmp-x.pkl"
    fresh = directory / ".tmp-y.pkl"
    foreign = directory / "notes.txt"
    for path in (stale, fresh, foreign):
        path.write_text("x")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    store.prune()
    assert not stale.exists()
    assert fresh.exists() and foreign.exists()


def test_files_vanishing_during_prune_and_listing(directory, monkeypatch):
    wrapped = middleware(HelloApp(), directory, max_profiles=1)
    for _ in range(3):
        call(wrapped, headers=TRIGGER)
    real_scandir = os.scandir

    def scandir_then_vanish(path):
        # Another process deletes everything right after this one listed the directory.
        entries = list(real_scandir(path))
        for entry in entries:
            if not entry.name.startswith(".wsgiprobe"):
                os.unlink(entry.path)
        return iter(entries)

    monkeypatch.setattr(storage.os, "scandir", scandir_then_vanish)
    assert wrapped.store.prune() == []
    assert wrapped.store.list_profiles() == ([], [])


def _save_many(directory, count, max_profiles, max_mb, failures):
    try:
        wrapped = middleware(HelloApp(), directory, max_profiles=max_profiles, max_mb=max_mb)
        for _ in range(count):
            result = call(wrapped, headers=TRIGGER)
            assert result.body == b"hello world"
        assert wrapped.profiles_saved == count
    except BaseException as exc:
        failures.put(repr(exc))
        raise


def _size(path):
    try:
        return path.stat().st_size
    except FileNotFoundError:  # pruned since the listing
        return 0


@pytest.mark.parametrize("bound", ["count", "size"])
def test_processes_saving_at_once_respect_the_bounds(directory, bound):
    # The parent makes the first middleware, as a preforking master would.
    parent = middleware(HelloApp(), directory)
    call(parent, headers=TRIGGER)
    one = sum(p.stat().st_size for p in directory.iterdir() if not p.name.startswith("."))
    max_profiles, max_mb = (4, 50.0) if bound == "count" else (1000, 3.5 * one / 1024**2)
    context = multiprocessing.get_context("fork")
    failures = context.Queue()
    workers = [
        context.Process(target=_save_many, args=(directory, 15, max_profiles, max_mb, failures))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    # What a reader sees meanwhile: never more than the bounds, not even for an instant.
    most_profiles, most_bytes = 0, 0
    while any(w.is_alive() for w in workers):
        names = {p.name for p in directory.iterdir() if not p.name.startswith(".")}
        most_profiles = max(most_profiles, sum(name.endswith(".pkl") for name in names))
        most_bytes = max(most_bytes, sum(_size(directory / name) for name in names))
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0], failures.get(timeout=1)
    assert most_profiles <= max_profiles
    assert most_bytes <= int(max_mb * 1024 * 1024)
    kept = ids(directory)
    files = [p for p in directory.iterdir() if not p.name.startswith(".")]
    assert len(files) == 2 * len(kept)  # every profile complete: .pkl and .json
    assert not any(p.name.startswith(".tmp-") for p in directory.iterdir())
    if bound == "count":
        assert len(kept) == 4
    else:
        assert 1 <= len(kept) <= 3
        assert sum(p.stat().st_size for p in files) <= int(max_mb * 1024 * 1024)


def test_the_lock_excludes_other_processes(directory):
    import fcntl

    store = storage.ProfileStore(directory, max_profiles=1, max_bytes=1)
    store.prepare()
    context = multiprocessing.get_context("fork")
    held, release = context.Event(), context.Event()

    def hold():
        with store._locked():  # the parent's store object, as a forked worker inherits it
            held.set()
            release.wait(10)

    child = context.Process(target=hold)
    child.start()
    try:
        assert held.wait(10)
        fd = os.open(directory / storage.LOCK_NAME, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        release.set()
        child.join(10)
    assert child.exitcode == 0
