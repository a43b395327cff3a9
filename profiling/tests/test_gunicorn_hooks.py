import itertools
import json
import os
import signal
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
        "nworkers_changed", "on_exit",
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


def test_a_hup_reload_keeps_indexes_unique(record_path):
    arbiter = FakeArbiter()
    hooks.on_starting(arbiter)
    old = [arbiter.spawn() for _ in range(4)]
    new = [arbiter.spawn() for _ in range(4)]  # HUP: the new ones fork before the old exit
    assert sorted(arbiter.indexes().values()) == list(range(1, 9))
    for worker in old:
        arbiter.reap(worker)
    assert [w["index"] for w in read(record_path)["workers"]] == [5, 6, 7, 8]
    assert [w["pid"] for w in read(record_path)["workers"]] == [w.pid for w in new]
    arbiter.reap(new[0])
    assert arbiter.spawn().wsgiprobe_index == 1  # respawns fill the low slots again


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


def test_real_gunicorn_respawn_takes_the_freed_index_and_hup_keeps_the_table(tmp_path):
    with run_server("gunicorn", tmp_path / "g") as server:
        first = server.wait_for_workers(4)
        assert sorted(first) == [1, 2, 3, 4]
        assert set(first.values()) == server.children()

        victim = first[2]
        os.kill(victim, signal.SIGKILL)
        after = server.wait_for_workers(4, exclude={victim})
        assert sorted(after) == [1, 2, 3, 4]
        assert after[2] != victim
        assert {i: p for i, p in after.items() if i != 2} == {
            i: p for i, p in first.items() if i != 2
        }

        # Each worker knows its index: what it reports itself matches the master's record.
        assert warm_up(server.url, gunicorn_record=str(server.workers_file), deadline=20).ok
        assert status(server) == server.worker_pids()

        # HUP: new workers fork before the old ones exit, so they take 5..8; none collide.
        os.kill(server.process.pid, signal.SIGHUP)
        reloaded = server.wait_for_workers(4, exclude=set(after.values()))
        assert sorted(reloaded) == [5, 6, 7, 8]
        assert set(reloaded.values()) == server.children()
        os.kill(reloaded[6], signal.SIGKILL)
        again = server.wait_for_workers(4, exclude={reloaded[6]})
        assert sorted(again) == [1, 5, 7, 8]
    assert not server.workers_file.exists()  # on_exit: a stopped server leaves no record


def test_gunicorn_accepts_every_exported_hook():
    from gunicorn.config import Config

    config = Config()
    namespace: dict = {}
    exec("from wsgiprobe.gunicorn_hooks import *", namespace)
    for name in hooks.__all__:
        config.set(name, namespace[name])  # validates the name and the arity
        assert getattr(config, name) is namespace[name]
