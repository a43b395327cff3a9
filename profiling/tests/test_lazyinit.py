import contextlib
import os
import threading
import time

import pytest

from wsgiprobe import lazyinit


@pytest.fixture
def registry():
    return lazyinit.Registry()


def test_registered_inits_are_pending_until_run(registry):
    calls = []
    registry.register("a", lambda: calls.append("a"))
    registry.register("b", lambda: calls.append("b"))
    assert registry.pending() == ["a", "b"]
    assert registry.done() == {}

    ran = registry.run_pending()

    assert calls == ["a", "b"]
    assert set(ran) == {"a", "b"}
    assert all(seconds >= 0 for seconds in ran.values())
    assert registry.pending() == []
    assert registry.done() == ran


def test_each_init_runs_once(registry):
    calls = []
    registry.register("a", lambda: calls.append("a"))
    registry.run_pending()
    assert registry.run_pending() == {}
    assert calls == ["a"]


def test_run_pending_reports_the_time_taken(registry):
    registry.register("slow", lambda: time.sleep(0.05))
    assert registry.run_pending()["slow"] >= 0.05


def test_a_failing_init_raises_and_stays_pending_the_others_run(registry):
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("store not up yet")

    registry.register("first", lambda: None)
    registry.register("flaky", flaky)
    registry.register("last", lambda: None)
    with pytest.raises(ConnectionError):
        registry.run_pending()
    assert registry.pending() == ["flaky"]
    assert set(registry.done()) == {"first", "last"}

    assert set(registry.run_pending()) == {"flaky"}
    assert registry.pending() == []


def test_the_first_failure_is_raised(registry):
    def fail(message):
        raise ValueError(message)

    registry.register("one", lambda: fail("one"))
    registry.register("two", lambda: fail("two"))
    with pytest.raises(ValueError, match="one"):
        registry.run_pending()
    assert registry.pending() == ["one", "two"]


def test_concurrent_callers_run_each_init_once(registry):
    calls = []
    registry.register("slow", lambda: (time.sleep(0.05), calls.append(1)))
    barrier = threading.Barrier(8)
    results = []

    def worker():
        barrier.wait()
        results.append(registry.run_pending())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1]
    assert sorted(len(r) for r in results) == [0] * 7 + [1]


def test_registering_a_name_again_replaces_its_init(registry):
    calls = []
    registry.register("a", lambda: calls.append("old"))
    registry.run_pending()
    registry.register("a", lambda: calls.append("new"))
    assert registry.pending() == ["a"]
    registry.run_pending()
    assert calls == ["old", "new"]


def test_registering_the_same_init_again_keeps_it_done(registry):
    def init():
        return None

    registry.register("a", init)
    registry.run_pending()
    registry.register("a", init)
    assert registry.pending() == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_the_inits_again(registry):
    registry.register("a", lambda: None)
    registry.run_pending()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report what it sees, then leave without running pytest's cleanup
        try:
            ok = registry.pending() == ["a"] and set(registry.run_pending()) == {"a"}
            os.write(write_end, b"ok" if ok else b"no")
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    assert os.read(read_end, 2) == b"ok"
    os.close(read_end)
    assert registry.pending() == []


def test_module_functions_share_one_registry():
    calls = []
    lazyinit.register("test_lazyinit.module_level", lambda: calls.append(1))
    assert "test_lazyinit.module_level" in lazyinit.pending()
    # Other inits of this process (the sample app's tests register some) may fail.
    with contextlib.suppress(Exception):
        lazyinit.run_pending()
    assert "test_lazyinit.module_level" in lazyinit.done()
    assert "test_lazyinit.module_level" not in lazyinit.pending()
    assert calls == [1]
