import contextlib
import itertools
import json
import os
import signal
import time
import urllib.request

import pytest
from test_warmup_support import run_server

from wsgiprobe import gunicorn_hooks as hooks
from wsgiprobe import workers
from wsgiprobe.warmup import warm_up

# -- the slot table ----------------------------------------------------------------------------


def test_new_workers_get_the_lowest_free_index():
    table = hooks.SlotTable()
    a, b, c = object(), object(), object()
    assert [table.assign(a), table.assign(b), table.assign(c)] == [1, 2, 3]
    assert table.free(b) == 2
    assert table.assign(object()) == 2  # the freed slot, not 4
    assert table.assign(object()) == 4


def test_freeing_an_unknown_worker_changes_nothing():
    table = hooks.SlotTable()
    table.assign(object())
    seq = table.seq
    assert table.free(object()) is None
    assert table.seq == seq


def test_no_collision_after_respawns():
    table = hooks.SlotTable()
    live = [object() for _ in range(4)]
    for worker in live:
        table.assign(worker)
    for round_ in range(20):  # kill one, respawn one, repeatedly
        victim = live.pop(round_ % len(live))
        freed = table.free(victim)
        replacement = object()
        assert table.assign(replacement) == freed
        live.append(replacement)
        indexes = [index for index, _ in table.entries()]
        assert indexes == [1, 2, 3, 4]


def test_keep_only_frees_slots_of_workers_gone_without_an_exit_hook():
    table = hooks.SlotTable()
    a, b = object(), object()
    table.assign(a)
    table.assign(b)  # say its fork failed: never in the server's WORKERS
    table.keep_only([a])
    assert [worker for _, worker in table.entries()] == [a]
    assert table.assign(object()) == 2


def test_the_seq_grows_with_every_change():
    table = hooks.SlotTable()
    worker = object()
    seqs = [table.seq]
    table.assign(worker)
    seqs.append(table.seq)
    table.free(worker)
    seqs.append(table.seq)
    assert seqs == sorted(set(seqs))


# -- the hooks, with a fake arbiter ------------------------------------------------------------


class FakeLog:
    def __init__(self):
        self.warnings = []

    def warning(self, message, *args):
        self.warnings.append(message % args)


class FakeWorker:
    def __init__(self, age, ppid):
        self.age = age
        self.ppid = ppid
        self.pid = None


class FakeArbiter:
    """What gunicorn's arbiter does around the hooks, without forking."""

    def __init__(self, num_workers=4):
        self.pid = os.getpid()
        self.WORKERS = {}
        self.num_workers = num_workers
        self.log = FakeLog()
        self._ages = itertools.count(1)
        self._pids = itertools.count(4_000_000)  # beyond pid_max: never a real process

    def spawn(self, child_writes=True):
        worker = FakeWorker(next(self._ages), self.pid)
        hooks.pre_fork(self, worker)
        worker.pid = next(self._pids)  # fork: the parent learns the pid, the child has it too
        self.WORKERS[worker.pid] = worker
        if child_writes:
            self.in_child(worker)
        return worker

    def in_child(self, worker):
        saved = workers._gunicorn_index
        try:
            hooks.post_fork(self, worker)
            return workers.worker_index()
        finally:
            workers._gunicorn_index = saved

    def reload(self):
        """gunicorn's reload(): on_reload, then a new generation forks before the old exits."""
        hooks.on_reload(self)
        return [self.spawn() for _ in range(self.num_workers)]

    def reap(self, worker):
        del self.WORKERS[worker.pid]
        hooks.child_exit(self, worker)

    def indexes(self):
        return {w.pid: w.wsgiprobe_index for w in self.WORKERS.values()}


@pytest.fixture
def record_path(tmp_path, monkeypatch):
    path = tmp_path / "workers.json"
    monkeypatch.setenv("WSGIPROBE_WORKERS_FILE", str(path))
    monkeypatch.setattr(hooks, "_table", hooks.SlotTable())
    return path


def read(path):
    return json.loads(path.read_text())


def test_hooks_are_exported_and_post_worker_init_is_left_free():
    assert set(hooks.__all__) == {
        "on_starting", "pre_fork", "post_fork", "child_exit", "worker_exit",
        "nworkers_changed", "on_reload", "on_exit",
    }  # fmt: skip
    namespace: dict = {}
    exec("from wsgiprobe.gunicorn_hooks import *", namespace)
    assert "post_worker_init" not in namespace
    assert "workers" not in namespace  # a gunicorn setting: the import must not set it


def test_the_record_follows_spawns_and_exits(record_path):
    arbiter = FakeArbiter()
    hooks.on_starting(arbiter)
    assert read(record_path)["workers"] == []
    spawned = [arbiter.spawn() for _ in range(4)]
    record = read(record_path)
    assert record["server"] == "gunicorn"
    assert record["master_pid"] == os.getpid()
    assert record["num_workers"] == 4
    assert record["workers"] == [{"index": i + 1, "pid": w.pid} for i, w in enumerate(spawned)]

    arbiter.reap(spawned[1])
    assert [w["index"] for w in read(record_path)["workers"]] == [1, 3, 4]
    replacement = arbiter.spawn()
    assert replacement.wsgiprobe_index == 2
    assert {"index": 2, "pid": replacement.pid} in read(record_path)["workers"]


def test_post_fork_gives_the_child_its_index(record_path):
    arbiter = FakeArbiter()
    hooks.on_starting(arbiter)
    arbiter.spawn()
    second = arbiter.spawn(child_writes=False)
    assert arbiter.in_child(second) == 2


def test_an_older_view_never_replaces_a_newer_record(record_path):
    arbiter = FakeArbiter()
    hooks.on_starting(arbiter)
    slow = arbiter.spawn(child_writes=False)  # its child has not written yet
    fast = arbiter.spawn()  # a later fork's child writes first: both workers listed
    arbiter.in_child(slow)  # the first child's view (without the second) comes too late
    assert [w["pid"] for w in read(record_path)["workers"]] == [slow.pid, fast.pid]


def test_a_worker_reaped_by_the_master_itself_frees_its_slot(record_path):
    arbiter = FakeArbiter()
    hooks.on_starting(arbiter)
    worker = arbiter.spawn()
    del arbiter.WORKERS[worker.pid]  # kill_worker found it gone (ESRCH): worker_exit, no child_exit
    hooks.worker_exit(arbiter, worker)
    assert read(record_path)["workers"] == []
    assert arbiter.spawn().wsgiprobe_index == 1


def test_worker_exit_in_the_worker_itself_changes_nothing(record_path):
    arbiter = FakeArbiter()
    hooks.on_starting(arbiter)
    worker = arbiter.spawn()
    arbiter.pid = os.getpid() + 1  # as seen from the worker: the master is another process
    hooks.worker_exit(arbiter, worker)
    assert len(read(record_path)["workers"]) == 1


def test_a_reload_gives_the_new_generation_1_to_n(record_path):
    arbiter = FakeArbiter()
    hooks.on_starting(arbiter)
    old = [arbiter.spawn() for _ in range(4)]
    new = arbiter.reload()
    assert [w.wsgiprobe_index for w in new] == [1, 2, 3, 4]
    listed = read(record_path)
    assert listed["workers"] == [{"index": i + 1, "pid": w.pid} for i, w in enumerate(new)]

    # The retired workers exit (reaped, or found gone): they free nothing, write nothing.
    for worker in old[:-1]:
        arbiter.reap(worker)
    del arbiter.WORKERS[old[-1].pid]
    hooks.worker_exit(arbiter, old[-1])
    assert read(record_path) == listed
    arbiter.reap(new[1])
    assert arbiter.spawn().wsgiprobe_index == 2


def test_a_failed_fork_does_not_leak_its_slot(record_path):
    arbiter = FakeArbiter()
    hooks.on_starting(arbiter)
    arbiter.spawn()
    hooks.pre_fork(arbiter, FakeWorker(99, arbiter.pid))  # os.fork() raised after this
    assert arbiter.spawn().wsgiprobe_index == 2


def test_on_exit_removes_only_its_own_record(record_path):
    arbiter = FakeArbiter()
    hooks.on_starting(arbiter)
    hooks.on_exit(arbiter)
    assert not record_path.exists()

    record_path.write_text(json.dumps({"master_pid": 1, "workers": []}))
    hooks.on_exit(arbiter)
    assert record_path.exists()


def test_without_the_env_var_there_is_no_record(tmp_path, monkeypatch):
    monkeypatch.delenv("WSGIPROBE_WORKERS_FILE", raising=False)
    monkeypatch.setattr(hooks, "_table", hooks.SlotTable())
    monkeypatch.chdir(tmp_path)
    arbiter = FakeArbiter()
    hooks.on_starting(arbiter)
    assert arbiter.spawn().wsgiprobe_index == 1
    assert os.listdir(tmp_path) == []


def test_a_record_that_cannot_be_written_is_a_warning_only(tmp_path, monkeypatch):
    monkeypatch.setenv("WSGIPROBE_WORKERS_FILE", str(tmp_path / "missing" / "workers.json"))
    monkeypatch.setattr(hooks, "_table", hooks.SlotTable())
    arbiter = FakeArbiter()
    hooks.on_starting(arbiter)
    assert arbiter.spawn().wsgiprobe_index == 1
    assert arbiter.log.warnings


def test_chain_calls_each_hook_in_turn():
    calls = []
    chained = hooks.chain(
        lambda *a: calls.append(("first", a)), lambda *a: calls.append(("second", a))
    )
    chained("server", "worker")
    assert calls == [("first", ("server", "worker")), ("second", ("server", "worker"))]


# -- a real gunicorn ---------------------------------------------------------------------------


def status(server):
    with urllib.request.urlopen(server.url + "?status", timeout=10) as response:
        return {entry["worker"]: entry["pid"] for entry in json.load(response)["workers"]}


def hup(server):
    os.kill(server.process.pid, signal.SIGHUP)


def wait_until(condition, what, server, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gunicorn: {what}\n{server.log.read_text()[-3000:]}")
        time.sleep(0.05)


def wait_for_generation(server, count, exclude=frozenset()):
    """The record lists ``count`` workers, none in ``exclude``, and the master has no other
    child: the workers of earlier generations have exited."""
    deadline = time.monotonic() + 20
    while True:
        listed = server.wait_for_workers(count, exclude)
        older = server.children() - set(listed.values())
        if not older:
            return listed
        if time.monotonic() > deadline:
            raise AssertionError(f"gunicorn: workers {older} still run beside {listed}")
        time.sleep(0.05)


def wait_for_record(server, expected):
    def listed():
        with contextlib.suppress(OSError, ValueError):
            return server.worker_pids() == expected
        return False

    wait_until(listed, f"the record never listed {expected}", server)


def own_indexes(server):
    """index -> pid as each worker itself reports it (it answers ?status from its own index)."""
    assert warm_up(server.url, gunicorn_record=str(server.workers_file), deadline=20).ok
    return status(server)


def booted(server):
    return server.log.read_text().count("Booting worker with pid")


def test_real_gunicorn_reload_and_respawn_keep_indexes_1_to_n(tmp_path):
    with run_server("gunicorn", tmp_path / "g", workers=3) as server:
        first = server.wait_for_workers(3)
        assert sorted(first) == [1, 2, 3]
        assert set(first.values()) == server.children()

        hup(server)  # the new generation forks before the old one exits
        reloaded = wait_for_generation(server, 3, exclude=set(first.values()))
        assert sorted(reloaded) == [1, 2, 3]
        assert own_indexes(server) == reloaded

        victim = reloaded[2]
        os.kill(victim, signal.SIGKILL)
        after = wait_for_generation(server, 3, exclude={victim})
        assert sorted(after) == [1, 2, 3]
        assert after[2] != victim
        assert {1: after[1], 3: after[3]} == {1: reloaded[1], 3: reloaded[3]}
        assert own_indexes(server) == after
    assert not server.workers_file.exists()  # on_exit: a stopped server leaves no record


def test_real_gunicorn_quick_reloads_in_a_row_keep_indexes_1_to_n(tmp_path):
    with run_server("gunicorn", tmp_path / "g", workers=3) as server:
        first = server.wait_for_workers(3)
        boots = booted(server)
        # Three: without on_reload, generations alternate between N+1..2N and 1..N. 0.1 s apart:
        # not merged into one signal, and a reload may retire a generation still booting.
        for _ in range(3):
            hup(server)
            time.sleep(0.1)
        wait_until(lambda: booted(server) >= boots + 9, "not three reloads", server)
        # The only children left are the last reload's: the earlier ones' have exited.
        last = wait_for_generation(server, 3, exclude=set(first.values()))
        assert sorted(last) == [1, 2, 3]
        assert own_indexes(server) == last


def test_real_gunicorn_a_retired_worker_still_exiting_takes_no_index(tmp_path):
    with run_server("gunicorn", tmp_path / "g", workers=3) as server:
        first = server.wait_for_workers(3)
        lingering = first[2]
        os.kill(lingering, signal.SIGSTOP)  # it cannot exit on the reload's SIGTERM
        try:
            hup(server)
            reloaded = server.wait_for_workers(3, exclude=set(first.values()))
            assert sorted(reloaded) == [1, 2, 3]
            assert lingering in server.children()  # stopped, still index 2 in its own process
            # gunicorn counts the lingering worker: no respawn until it has gone.
            os.kill(reloaded[1], signal.SIGKILL)
            wait_for_record(server, {2: reloaded[2], 3: reloaded[3]})
        finally:
            os.kill(lingering, signal.SIGCONT)
        # Its exit frees no slot of the new generation: the respawn takes index 1.
        after = wait_for_generation(server, 3, exclude={lingering, reloaded[1]})
        assert sorted(after) == [1, 2, 3]
        assert {2: after[2], 3: after[3]} == {2: reloaded[2], 3: reloaded[3]}
        assert own_indexes(server) == after


def test_gunicorn_accepts_every_exported_hook():
    from gunicorn.config import Config

    config = Config()
    namespace: dict = {}
    exec("from wsgiprobe.gunicorn_hooks import *", namespace)
    for name in hooks.__all__:
        config.set(name, namespace[name])  # validates the name and the arity
        assert getattr(config, name) is namespace[name]
