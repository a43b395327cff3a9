import fcntl
import io
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import types

import pytest

from wsgiprobe import compose, lazyinit, workers
from wsgiprobe.lazyinit_wsgi import LazyInitMiddleware

fork = multiprocessing.get_context("fork")


def inner_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"inner " + environ["PATH_INFO"].encode()]


def call(app, path="/lazyinit", query="", method="GET"):
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.errors": io.StringIO(),
    }
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return int(seen["status"][:3]), seen["headers"], body, environ["wsgi.errors"].getvalue()


def get(app, query=""):
    status, headers, body, _ = call(app, query=query)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


@pytest.fixture
def registry():
    return lazyinit.Registry()


@pytest.fixture(autouse=True)
def _no_state_dir_from_env(monkeypatch):
    monkeypatch.delenv("WSGIPROBE_LAZYINIT_DIR", raising=False)
    saved = workers._gunicorn_index
    yield
    workers._gunicorn_index = saved


def test_other_paths_pass_straight_through(registry):
    registry.register("never", lambda: pytest.fail("an init ran on a normal request"))
    app = LazyInitMiddleware(inner_app, registry=registry)
    for path in ("/", "/lazyinit/", "/lazyinitx", "/api/lazyinit"):
        status, _, body, _ = call(app, path=path, method="POST")
        assert (status, body) == (200, b"inner " + path.encode())
    assert registry.pending() == ["never"]


def test_get_runs_the_pending_inits_once(registry):
    calls = []
    registry.register("fonts", lambda: (time.sleep(0.02), calls.append("fonts")))
    registry.register("store", lambda: calls.append("store"))
    app = LazyInitMiddleware(inner_app, registry=registry)

    status, answer = get(app)
    assert status == 200
    assert answer["ran"] == ["fonts", "store"]
    assert answer["warm"] is True and answer["busy"] is False and answer["pending"] == []
    assert answer["init_seconds"] >= 0.02
    assert answer["pid"] == os.getpid()
    assert {"worker", "server"} <= set(answer)

    status, again = get(app)
    assert (status, again["ran"], again["warm"]) == (200, [], True)
    assert again["init_seconds"] == answer["init_seconds"]  # what the init took, not this call
    assert calls == ["fonts", "store"]


def test_inits_the_app_ran_itself_count_as_warm(registry):
    registry.register("fonts", lambda: None)
    registry.run_pending()  # a real request got there first
    _, answer = get(LazyInitMiddleware(inner_app, registry=registry))
    assert answer["warm"] is True and answer["ran"] == [] and answer["init_seconds"] >= 0


def test_the_default_registry_is_the_one_run(monkeypatch):
    fresh = lazyinit.Registry()
    monkeypatch.setattr(lazyinit, "_default", fresh)
    fresh.register("x", lambda: None)
    _, answer = get(LazyInitMiddleware(inner_app))
    assert answer["ran"] == ["x"]


def test_a_failing_init_answers_json_500_and_stays_pending(registry):
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("redis down")

    registry.register("store", flaky)
    app = LazyInitMiddleware(inner_app, registry=registry)
    status, headers, body, log = call(app)
    assert status == 500
    assert headers["Content-Type"] == "application/json"
    answer = json.loads(body)
    assert answer["error"] == "init_failed"
    assert answer["message"] == "ConnectionError: redis down"
    assert answer["pending"] == ["store"] and answer["pid"] == os.getpid() and "worker" in answer
    assert "Traceback" in log and "redis down" in log  # the error log gets the details

    status, answer = get(app)  # the next call tries again
    assert (status, answer["warm"], answer["ran"]) == (200, True, ["store"])


def test_hold_keeps_a_warm_worker_busy(registry):
    registry.register("x", lambda: None)
    app = LazyInitMiddleware(inner_app, registry=registry)
    start = time.monotonic()
    get(app, "hold=150")  # cold: inits, never holds
    assert time.monotonic() - start < 0.1
    start = time.monotonic()
    status, answer = get(app, "hold=150")
    assert status == 200 and answer["warm"] is True
    assert time.monotonic() - start >= 0.15


@pytest.mark.parametrize("query", ["hold=", "hold=-1", "hold=1001", "hold=abc", "hold=1&hold=2"])
def test_a_malformed_hold_is_a_json_400(registry, query):
    status, answer = get(LazyInitMiddleware(inner_app, registry=registry), query)
    assert status == 400 and answer["error"] == "bad_request"


@pytest.mark.parametrize("method", ["POST", "HEAD", "DELETE"])
def test_other_methods_are_a_json_405(registry, method):
    registry.register("x", lambda: pytest.fail("ran"))
    status, headers, body, _ = call(LazyInitMiddleware(inner_app, registry=registry), method=method)
    assert status == 405 and headers["Allow"] == "GET"
    assert json.loads(body)["error"] == "method_not_allowed"


def test_threads_of_one_worker_wait_for_the_one_initialising(registry):
    calls = []
    registry.register("slow", lambda: (time.sleep(0.1), calls.append(1)))
    app = LazyInitMiddleware(inner_app, registry=registry)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(get(app)[1])) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1]
    assert all(a["warm"] and not a["busy"] for a in answers)
    assert sorted(len(a["ran"]) for a in answers) == [0, 0, 0, 1]


def test_max_concurrent_must_be_positive():
    with pytest.raises(ValueError):
        LazyInitMiddleware(inner_app, max_concurrent=0)


# -- the limit across processes ----------------------------------------------------------------


def _init_until_warm(state_dir, max_concurrent, barrier, intervals, busy_counts):
    registry = lazyinit.Registry()
    spans = []

    def init():
        start = time.monotonic()
        time.sleep(0.1)
        spans.append((start, time.monotonic()))

    registry.register("slow", init)
    app = LazyInitMiddleware(
        inner_app, state_dir=str(state_dir), max_concurrent=max_concurrent, registry=registry
    )
    barrier.wait()
    busy = 0
    while True:
        status, answer = get(app)
        assert status == 200
        if answer["warm"]:
            break
        assert answer["busy"] is True and answer["ran"] == []
        busy += 1
        time.sleep(0.01)
    intervals.extend(spans)
    busy_counts.append(busy)


@pytest.mark.parametrize("limit", [1, 2])
def test_at_most_max_concurrent_processes_initialise_at_once(tmp_path, limit):
    processes_count = 4
    with fork.Manager() as manager:
        intervals, busy_counts = manager.list(), manager.list()
        barrier = fork.Barrier(processes_count)
        processes = [
            fork.Process(
                target=_init_until_warm,
                args=(tmp_path, limit, barrier, intervals, busy_counts),
            )
            for _ in range(processes_count)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(20)
            assert process.exitcode == 0
        spans = list(intervals)
        busy = sum(busy_counts)
    assert len(spans) == processes_count  # each process ran its init exactly once
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak == limit
    assert busy > 0  # the others were told to come back


def _hold_a_slot_forever(state_dir, started):
    registry = lazyinit.Registry()
    registry.register("stuck", lambda: (started.set(), time.sleep(60)))
    get(LazyInitMiddleware(inner_app, state_dir=str(state_dir), registry=registry))


def test_a_dead_worker_frees_its_slot(tmp_path, registry):
    started = fork.Event()
    stuck = fork.Process(target=_hold_a_slot_forever, args=(tmp_path, started))
    stuck.start()
    try:
        assert started.wait(10)
        registry.register("x", lambda: None)
        app = LazyInitMiddleware(inner_app, state_dir=str(tmp_path), registry=registry)
        _, answer = get(app)
        assert answer == {**answer, "warm": False, "busy": True, "ran": [], "pending": ["x"]}
        assert answer["init_seconds"] is None
    finally:
        os.kill(stuck.pid, signal.SIGKILL)
        stuck.join()
    _, answer = get(app)
    assert answer["warm"] is True and answer["ran"] == ["x"]


# -- state files and status --------------------------------------------------------------------


def _warm_worker(state_dir, index, ready):
    workers.set_worker_index(index)
    registry = lazyinit.Registry()
    registry.register("x", lambda: time.sleep(0.01))
    get(LazyInitMiddleware(inner_app, state_dir=str(state_dir), registry=registry))
    ready.set()
    time.sleep(30)  # until the test ends it (an Event would hang once a waiter is killed)


def _ask_status(state_dir, answers):
    workers.set_worker_index(4)
    registry = lazyinit.Registry()
    registry.register("x", lambda: None)
    app = LazyInitMiddleware(inner_app, state_dir=str(state_dir), registry=registry)
    answers.put(get(app, "status"))
    get(app)  # worker 4 warms up: its file says so


def _foreign_state(state_dir, index, pid):
    # A file left by an earlier run whose pid now belongs to another process (reused).
    workers.write_json_atomic(
        str(state_dir / f"worker-{index}.json"),
        {"worker": index, "pid": pid, "warm": True, "updated": 1.0},
    )


def test_status_lists_the_workers_of_the_host_and_drops_dead_ones(tmp_path):
    state_dir = tmp_path / "lazyinit"  # created on first use
    children = []
    for index in (1, 2, 3):
        ready = fork.Event()
        child = fork.Process(target=_warm_worker, args=(state_dir, index, ready))
        child.start()
        assert ready.wait(10)
        children.append(child)
    os.kill(children[1].pid, signal.SIGKILL)  # worker 2 dies: its file stays, marked stale
    children[1].join()
    _foreign_state(state_dir, 7, os.getpid())  # alive, but no sibling of the workers
    try:
        # The asking worker is a sibling of the others, as under a real master.
        answers = fork.Queue()
        asker = fork.Process(target=_ask_status, args=(state_dir, answers))
        asker.start()
        status, answer = answers.get(timeout=10)
        asker.join(10)
        assert status == 200
        listed = {entry["worker"]: entry for entry in answer["workers"]}
        assert sorted(listed) == [1, 3, 4]
        assert listed[1]["pid"] == children[0].pid and listed[3]["pid"] == children[2].pid
        assert listed[1]["warm"] is True and listed[1]["init_seconds"] >= 0.01
        assert listed[4] == {**listed[4], "pid": asker.pid, "warm": False, "init_seconds": None}
        assert {"updated", "pending", "error", "initialising"} <= set(listed[1])
        assert answer["stale"] == [
            {"worker": 2, "pid": children[1].pid},
            {"worker": 7, "pid": os.getpid()},
        ]
        states = [name for name in os.listdir(state_dir) if name.endswith(".json")]
        assert sorted(states) == [f"worker-{i}.json" for i in (1, 2, 3, 4, 7)]
        saved = json.loads((state_dir / "worker-4.json").read_text())
        assert saved["warm"] is True and saved["pid"] == asker.pid
    finally:
        for child in children:
            child.terminate()
            child.join(10)


def test_a_failed_init_shows_in_the_state(tmp_path, registry):
    workers.set_worker_index(1)

    def boom():
        raise RuntimeError("no fonts")

    registry.register("fonts", boom)
    app = LazyInitMiddleware(inner_app, state_dir=str(tmp_path), registry=registry)
    assert call(app)[0] == 500
    saved = json.loads((tmp_path / "worker-1.json").read_text())
    assert saved["warm"] is False and saved["error"] == "RuntimeError: no fonts"
    assert saved["initialising"] is False


def test_without_a_state_dir_status_is_this_worker_only(registry):
    registry.register("x", lambda: None)
    app = LazyInitMiddleware(inner_app, registry=registry)
    _, answer = get(app, "status")
    assert [entry["pid"] for entry in answer["workers"]] == [os.getpid()]
    assert answer["stale"] == []


def test_the_state_dir_comes_from_the_environment(tmp_path, monkeypatch, registry):
    monkeypatch.setenv("WSGIPROBE_LAZYINIT_DIR", str(tmp_path))
    registry.register("x", lambda: None)
    get(LazyInitMiddleware(inner_app, registry=registry))
    assert sorted(os.listdir(tmp_path)) == [f"pid-{os.getpid()}.json", "slot-0.lock"]


def test_a_forked_worker_starts_cold_with_its_own_state(tmp_path, registry):
    registry.register("x", lambda: None)
    app = LazyInitMiddleware(inner_app, state_dir=str(tmp_path), registry=registry)
    get(app)  # warm in the parent (as if a master had run it)
    result = fork.Queue()
    child = fork.Process(target=lambda: result.put(get(app)[1]))
    child.start()
    answer = result.get(timeout=10)
    child.join(10)
    assert answer["pid"] == child.pid and answer["ran"] == ["x"]


# -- the release and initialising at load ------------------------------------------------------


def test_the_release_is_in_every_answer_status_and_state_file(tmp_path, registry):
    workers.set_worker_index(1)
    registry.register("x", lambda: None)
    app = LazyInitMiddleware(inner_app, state_dir=str(tmp_path), registry=registry, release="r1")
    assert get(app)[1]["release"] == "r1"
    assert get(app, "hold=0")[1]["release"] == "r1"  # warm already
    assert [entry["release"] for entry in get(app, "status")[1]["workers"]] == ["r1"]
    assert json.loads((tmp_path / "worker-1.json").read_text())["release"] == "r1"
    _, unlabelled = get(LazyInitMiddleware(inner_app, registry=registry))
    assert "release" in unlabelled and unlabelled["release"] is None


def _warm_on_load(state_dir, index, ready):
    workers.set_worker_index(index)
    registry = lazyinit.Registry()
    registry.register("x", lambda: time.sleep(0.01))
    app = LazyInitMiddleware(inner_app, state_dir=str(state_dir), registry=registry, release="r1")
    if app.initialise_now():  # no request at all
        ready.set()
    time.sleep(30)  # until the test ends it


def test_initialise_now_warms_the_worker_and_status_lists_it_warm(tmp_path):
    ready = fork.Event()
    loaded = fork.Process(target=_warm_on_load, args=(tmp_path, 1, ready))
    loaded.start()
    try:
        assert ready.wait(10)
        saved = json.loads((tmp_path / "worker-1.json").read_text())
        assert saved == {
            **saved,
            "pid": loaded.pid,
            "warm": True,
            "initialising": False,
            "pending": [],
            "error": None,
            "release": "r1",
        }
        assert saved["init_seconds"] >= 0.01
        answers = fork.Queue()
        asker = fork.Process(target=_ask_status, args=(tmp_path, answers))  # a sibling worker
        asker.start()
        status, answer = answers.get(timeout=10)
        asker.join(10)
        listed = {entry["worker"]: entry for entry in answer["workers"]}
        assert status == 200 and sorted(listed) == [1, 4]
        assert listed[1] == {**listed[1], "pid": loaded.pid, "warm": True, "release": "r1"}
    finally:
        loaded.terminate()
        loaded.join(10)


def test_initialise_now_runs_the_inits_once(registry):
    calls = []
    registry.register("fonts", lambda: calls.append("fonts"))
    app = LazyInitMiddleware(inner_app, registry=registry)
    assert app.initialise_now() is True
    assert app.initialise_now() is True
    assert calls == ["fonts"]
    _, answer = get(app)
    assert answer["warm"] is True and answer["ran"] == [] and calls == ["fonts"]


def test_initialise_now_with_a_failing_init_leaves_the_worker_cold(tmp_path, registry, capsys):
    workers.set_worker_index(1)
    broken = [True]

    def fonts():
        if broken:
            raise RuntimeError("no fonts")

    registry.register("fonts", fonts)
    app = LazyInitMiddleware(inner_app, state_dir=str(tmp_path), registry=registry)
    assert app.initialise_now() is False
    err = capsys.readouterr().err
    assert f"lazyinit failed in pid {os.getpid()}" in err and "Traceback" in err
    saved = json.loads((tmp_path / "worker-1.json").read_text())
    assert saved == {
        **saved,
        "warm": False,
        "initialising": False,
        "pending": ["fonts"],
        "error": "RuntimeError: no fonts",
    }
    _, status = get(app, "status")
    assert status["workers"][0]["warm"] is False

    broken.clear()  # fixed: the warm-up's request initialises the worker
    status, answer = get(app)
    assert (status, answer["warm"], answer["ran"]) == (200, True, ["fonts"])
    saved = json.loads((tmp_path / "worker-1.json").read_text())
    assert saved["warm"] is True and saved["error"] is None


def test_initialise_now_without_a_free_slot_runs_nothing(tmp_path, registry):
    workers.set_worker_index(1)
    calls = []
    registry.register("x", lambda: calls.append("x"))
    app = LazyInitMiddleware(inner_app, state_dir=str(tmp_path), registry=registry)
    # Another worker initialising: it holds the only slot (a flock is per open file, so an fd
    # of this process stands for it).
    holder = os.open(tmp_path / "slot-0.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert app.initialise_now() is False
        assert calls == [] and registry.pending() == ["x"]
        saved = json.loads((tmp_path / "worker-1.json").read_text())
        assert saved == {**saved, "warm": False, "initialising": False, "error": None}
    finally:
        os.close(holder)
    assert app.initialise_now() is True and calls == ["x"]


# -- compose.build_application: the environment the deploy writes ------------------------------


@pytest.fixture
def built_env(monkeypatch):
    """An app named by WSGIPROBE_APP, and an init in a fresh default registry."""
    module = types.ModuleType("lazyinit_wiring_app")
    module.app = inner_app
    monkeypatch.setitem(sys.modules, "lazyinit_wiring_app", module)
    fresh = lazyinit.Registry()
    monkeypatch.setattr(lazyinit, "_default", fresh)
    calls = []
    fresh.register("fonts", lambda: calls.append("fonts"))
    return {"WSGIPROBE_APP": "lazyinit_wiring_app:app"}, calls


@pytest.mark.parametrize("value", ["1", "true", " Yes "])
def test_build_application_initialises_at_load_when_asked(built_env, value):
    env, calls = built_env
    app = compose.build_application({**env, "WSGIPROBE_LAZYINIT_ON_LOAD": value})
    assert calls == ["fonts"]
    _, answer = get(app)
    assert answer["warm"] is True and answer["ran"] == []
    assert call(app, path="/")[2] == b"inner /"


@pytest.mark.parametrize("value", [None, "", "0", "off"])
def test_build_application_leaves_the_init_to_the_warm_up_by_default(built_env, value):
    env, calls = built_env
    if value is not None:
        env = {**env, "WSGIPROBE_LAZYINIT_ON_LOAD": value}
    app = compose.build_application(env)
    assert calls == []
    _, answer = get(app)
    assert answer["ran"] == ["fonts"] and calls == ["fonts"]


def test_a_bad_on_load_value_stops_the_app(built_env):
    env, calls = built_env
    with pytest.raises(ValueError) as caught:
        compose.build_application({**env, "WSGIPROBE_LAZYINIT_ON_LOAD": "sometimes"})
    assert "WSGIPROBE_LAZYINIT_ON_LOAD" in str(caught.value) and "'sometimes'" in str(caught.value)
    assert calls == []
