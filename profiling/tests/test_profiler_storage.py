"""What a profile holds on disk and the bounds on the shared directory (scrubbing:
test_profiler_scrub)."""

import json
import multiprocessing
import os
import pickle
import random
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
    assert data["environ"]["QUERY_STRING"] == "page=[redacted]"  # test_profiler_scrub: why
    assert any("HelloApp.__call__" in key or "__call__" in key for key in data["profile"])
    record = data["wsgiprobe"]
    assert record["worker"] == WORKER["worker"]
    assert record["pid"] == WORKER["pid"]
    assert record["server"] == "uwsgi"
    assert record["method"] == "POST"
    assert record["path"] == "/items"
    assert record["query"] == "page=[redacted]"
    assert record["status"] == 201
    assert record["duration_ms"] > 0
    assert json.loads((directory / f"{profile_id}.json").read_text()) == record
    # Private files, and no temp file left behind.
    for path in directory.iterdir():
        assert not path.name.startswith(".tmp-")
        assert path.stat().st_mode & 0o077 == 0


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


@pytest.mark.parametrize("seen_before", [True, False])
def test_files_vanishing_during_prune_and_listing(directory, monkeypatch, seen_before):
    wrapped = middleware(HelloApp(), directory, max_profiles=1)
    for _ in range(3):
        call(wrapped, headers=TRIGGER)
    # The store that saved them knows the files; another process's sees them for the first time.
    store = wrapped.store if seen_before else storage.ProfileStore(directory, 1, 10**9)
    real_listdir = os.listdir

    def listdir_then_vanish(path):
        # Another process deletes everything right after this one listed the directory.
        names = real_listdir(path)
        for name in names:
            if not name.startswith(".wsgiprobe"):
                os.unlink(os.path.join(path, name))
        return names

    monkeypatch.setattr(storage.os, "listdir", listdir_then_vanish)
    assert store.prune() == []
    assert store.list_profiles() == ([], [])
    monkeypatch.undo()
    assert store.list_profiles() == ([], [])  # and the next listing forgets them


def _stats_in(directory, monkeypatch):
    """The names of the files in directory that get stat()ed from now on."""
    names = []
    real_stat = os.stat

    def counting_stat(path, *args, **kwargs):
        if str(path).startswith(f"{directory}/"):
            names.append(os.path.basename(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(storage.os, "stat", counting_stat)
    return names


def test_a_save_stats_only_the_files_new_to_its_process(directory, monkeypatch):
    first = middleware(HelloApp(), directory, max_profiles=3)
    other = middleware(HelloApp(), directory, max_profiles=3)  # as in another worker
    for _ in range(4):
        call(first, headers=TRIGGER)
    stats = _stats_in(directory, monkeypatch)
    for _ in range(3):
        call(first, headers=TRIGGER)
    assert stats == []  # its own files: known since it wrote them
    before = set(ids(directory))
    call(other, headers=TRIGGER)
    assert len(stats) == 6  # the 3 profiles it had not seen yet (.pkl and .json)
    stats.clear()
    call(other, headers=TRIGGER)
    assert stats == []
    added = set(ids(directory)) - before
    call(first, headers=TRIGGER)
    # The other's two profiles, and nothing else.
    assert sorted(stats) == sorted(f"{i}{suffix}" for i in added for suffix in (".json", ".pkl"))
    assert len(ids(directory)) == 3


def _disk(directory):
    """(profiles, bytes) as a reader counts them: every profile file, whoever wrote it."""
    files = [p for p in directory.iterdir() if storage._profile_id_of(p.name)]
    return len({p.stem for p in files}), sum(p.stat().st_size for p in files)


def test_files_written_by_others_count_at_the_next_save(directory):
    store = storage.ProfileStore(directory, max_profiles=3, max_bytes=10_000)
    store.prepare()
    for n in range(3):
        assert store.save(str(n), b"p" * 1000, {}) == []  # 1002 bytes each, with the "{}"
    # Written without the store (plain Dozer, a copy): no room was made, the next save counts it.
    (directory / "9.pkl").write_bytes(b"d" * 6000)
    assert store.save("3", b"p" * 1000, {}) == ["0", "1"]
    assert _disk(directory) == (3, 1002 + 6000 + 1002)


def test_a_file_changed_in_place_is_counted_at_the_full_rescan(directory):
    store = storage.ProfileStore(directory, max_profiles=10, max_bytes=10_000)
    store.prepare()
    for n in range(3):
        store.save(str(n), b"p" * 1000, {})
    # Grown in place (or replaced) under a name the view knows: not stat()ed again...
    path = directory / "0.pkl"
    st = path.stat()
    with open(path, "ab") as f:
        f.write(b"x" * 8000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # still the oldest
    assert store.prune() == []
    store._view.since -= storage.FULL_SCAN_SECONDS  # ...until the view is a minute old
    assert store.prune() == ["0"]
    assert _disk(directory) == (2, 2004)


def test_a_temp_file_seen_while_fresh_is_removed_once_stale(directory, monkeypatch):
    store = storage.ProfileStore(directory, max_profiles=1, max_bytes=10**9)
    store.prepare()
    temp = directory / ".tmp-z.pkl"
    temp.write_text("x")
    store.prune()
    assert temp.exists()
    monkeypatch.setattr(storage, "STALE_TMP_SECONDS", -1)  # as if 5 minutes had passed
    store.prune()
    assert not temp.exists()


def _fresh_view(directory):
    files = storage.ProfileStore(directory, 1, 1)._scan()  # a new process: stats every file
    return {profile_id: sorted(names) for profile_id, names in files.items()}


def test_the_view_of_each_process_matches_a_fresh_scan(directory):
    # Two stores (two worker processes) save, delete and prune while files come and go behind
    # their backs; whatever happened, each one's view is what a full scan finds.
    bounds = {"max_profiles": 6, "max_bytes": 60_000}
    stores = [storage.ProfileStore(directory, **bounds) for _ in range(2)]
    stores[0].prepare()
    rng = random.Random(1234)
    for step in range(300):
        store = rng.choice(stores)
        action = rng.random()
        names = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
        if action < 0.5:
            store.save(f"{step:04d}", b"x" * rng.randrange(100, 15_000), {"step": step})
            assert _disk(directory) <= (bounds["max_profiles"], bounds["max_bytes"])
        elif action < 0.6 and names:
            (directory / rng.choice(names)).unlink()  # someone else removes one file
        elif action < 0.7:
            (directory / f"{step:04d}d.pkl").write_bytes(b"d" * 500)  # plain Dozer's
        elif action < 0.75:
            (directory / f"notes-{step}.txt").write_text("foreign")
        elif action < 0.8:
            (directory / f".tmp-{step}.pkl").write_text("in flight")
        elif action < 0.9 and names:
            store.delete(rng.choice(names).rpartition(".")[0])
        elif action < 0.95:
            store.prune()
            assert _disk(directory) <= (bounds["max_profiles"], bounds["max_bytes"])
        else:
            store.delete()
        for each in stores:
            files = each._scan()
            assert {i: sorted(f) for i, f in files.items()} == _fresh_view(directory)
            assert each._view.total == sum(size for f in files.values() for _, size, _ in f)


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
