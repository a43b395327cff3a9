"""The warm-up's parts (discovery, answers, the command line) and its algorithm against a
simulated server whose "kernel" always hands a connection to the first idle worker."""

import contextlib
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from wsgiprobe import warmup
from wsgiprobe.discovery import Discovery, Worker


def test_parse_answer():
    ok = warmup.parse_answer(200, b'{"worker": 2, "pid": 7, "warm": true, "init_seconds": 0.5,'
                                  b' "ran": ["a"], "pending": [], "busy": false}')  # fmt: skip
    assert (ok.index, ok.pid, ok.warm, ok.init_seconds, ok.ran, ok.error) == (
        2, 7, True, 0.5, ["a"], None
    )  # fmt: skip
    busy = warmup.parse_answer(200, b'{"worker": 1, "pid": 8, "warm": false, "busy": true}')
    assert busy.busy and not busy.warm
    failed = warmup.parse_answer(
        500, b'{"error": "init_failed", "message": "OSError: x", "worker": 1, "pid": 9}'
    )
    assert (failed.pid, failed.failure) == (9, "OSError: x")
    assert "not JSON" in warmup.parse_answer(502, b"<html>Bad Gateway</html>").error
    assert warmup.parse_answer(403, b'{"error": "forbidden"}').error.startswith("HTTP 403")


def test_parse_answer_reads_the_release():
    body = {"worker": 1, "pid": 7, "warm": True, "release": "3f2a9c1d0b4e"}
    assert warmup.parse_answer(200, json.dumps(body).encode()).release == "3f2a9c1d0b4e"
    for release in (None, 12, ["x"]):  # an older toolkit sends none; never a non-string
        body["release"] = release
        assert warmup.parse_answer(200, json.dumps(body).encode()).release is None


def test_client_targets():
    client = warmup.Client("http://127.0.0.1:8080/lazyinit", host_header="app.example")
    assert (client.host, client.port, client.target) == ("127.0.0.1", 8080, "/lazyinit")
    assert client.host_header == "app.example"
    with pytest.raises(ValueError):
        warmup.Client("ftp://127.0.0.1/lazyinit")


# -- the command line --------------------------------------------------------------------------


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        warmup.main(["--url", "x", "--uwsgi-stats", "a", "--gunicorn-record", "b"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        warmup.main(["--url", "x", "--uwsgi-stats", "a", "--tries", "0"])
    assert exit_.value.code == 2
    code = warmup.main(["--url", "ftp://x/lazyinit", "--gunicorn-record", "/nonexistent"])
    assert code == 2
    assert "http://" in capsys.readouterr().err


def test_a_discovery_error_exits_2_with_a_clear_message(tmp_path, monkeypatch, capsys):
    # Without a source option, the app's env names both (wsgiprobe.discovery tests each case).
    monkeypatch.setenv("WSGIPROBE_UWSGI_STATS", str(tmp_path / "stats.sock"))
    monkeypatch.setenv("WSGIPROBE_WORKERS_FILE", str(tmp_path / "workers.json"))
    argv = ["--url", "http://127.0.0.1:9/lazyinit", "--discovery-wait", "0"]
    assert warmup.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("warm-up: no app server found: uWSGI stats socket")
    assert "no gunicorn worker record" in err


# -- the algorithm, against a simulated server -------------------------------------------------


class SimServer:
    """Workers that each serve one request at a time, picked the way an idle server's kernel
    tends to: the first idle one, always in the same order."""

    def __init__(self, count, init_seconds=0.05, limit=1, failing=(), release=None):
        self.cond = threading.Condition()
        self.pids = [1000 + i for i in range(count)]
        self.releases = [release] * count  # what each worker's answers say it runs
        self.busy = [False] * count
        self.warm = [False] * count
        self.requests = [0] * count
        self.init_seconds = init_seconds
        self.limit = limit
        self.failing = set(failing)
        self.initialising = self.peak = 0
        self.holds = []
        self.on_warm = None  # called with the index of each newly warm worker

    def discovery(self):
        with self.cond:
            workers = tuple(Worker(i + 1, pid) for i, pid in enumerate(self.pids))
        return Discovery("sim", workers, len(self.pids))

    def respawn(self, i, release=None):
        with self.cond:
            self.pids[i] += 100
            self.warm[i] = False
            self.releases[i] = release if release is not None else self.releases[i]

    def handle(self, hold):
        with self.cond:
            self.cond.wait_for(lambda: not all(self.busy))
            i = self.busy.index(False)
            self.busy[i] = True
            self.requests[i] += 1
            pid, warm, release = self.pids[i], self.warm[i], self.releases[i]
        try:
            if warm:
                self.holds.append(hold)
                time.sleep(hold / 1000)
                return 200, {"worker": i + 1, "pid": pid, "warm": True, "busy": False,
                             "init_seconds": self.init_seconds, "ran": [],
                             "release": release}  # fmt: skip
            with self.cond:
                if self.initialising >= self.limit:
                    return 200, {"worker": i + 1, "pid": pid, "warm": False, "busy": True}
                self.initialising += 1
                self.peak = max(self.peak, self.initialising)
            time.sleep(self.init_seconds)
            with self.cond:
                self.initialising -= 1
                if i + 1 in self.failing:
                    return 500, {"error": "init_failed", "message": "RuntimeError: no store",
                                 "worker": i + 1, "pid": pid}  # fmt: skip
                self.warm[i] = True
            if self.on_warm:
                self.on_warm(i)
            return 200, {"worker": i + 1, "pid": pid, "warm": True, "busy": False,
                         "init_seconds": self.init_seconds, "ran": ["x"],
                         "release": release}  # fmt: skip
        finally:
            with self.cond:
                self.busy[i] = False
                self.cond.notify_all()


@contextlib.contextmanager
def serve(sim):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            query = parse_qs(urlsplit(self.path).query)
            status, body = sim.handle(int(query.get("hold", ["0"])[0]))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/lazyinit"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("count", "limit"), [(4, 1), (8, 1), (8, 3)])
def test_every_worker_gets_warm_with_at_most_k_initialising(count, limit):
    sim = SimServer(count, limit=limit)
    lines = []
    with serve(sim) as url:
        result = warmup.warm_up(
            url, discover=sim.discovery, concurrency=limit, deadline=20, progress=lines.append
        )
    assert result.ok and result.exit_code == 0
    assert all(sim.warm) and sim.peak <= limit
    assert [w.pid for w in result.workers] == sim.pids
    assert sum(w.requests for w in result.workers) == result.tries == sum(sim.requests)
    assert sum(line.startswith("warm: ") for line in lines) == count
    # With K=1 on this server, a wave of warm+1 reaches one cold worker at best:
    assert result.waves >= -(-count // limit)


def test_hold_grows_only_while_waves_make_no_progress():
    sim = SimServer(4, init_seconds=0.0)  # instant inits: nothing keeps a worker busy but hold
    with serve(sim) as url:
        result = warmup.warm_up(url, discover=sim.discovery, deadline=20)
    assert result.ok
    assert result.max_hold_ms > 0
    assert sim.holds[0] == 0  # it starts without holding


def test_already_warm_workers_are_confirmed_without_inits():
    sim = SimServer(4)
    sim.warm = [True] * 4
    with serve(sim) as url:
        result = warmup.warm_up(url, discover=sim.discovery, deadline=20)
    assert result.ok and sim.peak == 0


def test_a_worker_respawned_during_the_warm_up_is_warmed_too():
    sim = SimServer(4)
    respawned = []

    def respawn_first_once(i):
        if i == 0 and not respawned:
            respawned.append(sim.pids[0])
            sim.respawn(0)

    sim.on_warm = respawn_first_once
    with serve(sim) as url:
        result = warmup.warm_up(url, discover=sim.discovery, deadline=20)
    assert respawned
    assert result.ok and all(sim.warm)
    assert respawned[0] not in [w.pid for w in result.workers]
    assert sim.pids[0] in [w.pid for w in result.workers]


def test_a_failing_init_everywhere_is_reported_at_once():
    sim = SimServer(4, failing={1, 2, 3, 4})
    with serve(sim) as url:
        result = warmup.warm_up(url, discover=sim.discovery, deadline=20)
    assert not result.ok and result.tries < 20
    assert "RuntimeError: no store" in result.summary()


def test_a_failing_init_is_named_and_ends_the_warm_up():
    sim = SimServer(4, failing={3})
    with serve(sim) as url:
        result = warmup.warm_up(url, discover=sim.discovery, deadline=20)
    assert not result.ok and result.exit_code == 1
    assert result.seconds < 5  # it gives up: no waiting for the deadline
    failed = {w.index: w for w in result.cold if w.state == "failed"}
    assert list(failed) == [3]
    assert failed[3].pid == sim.pids[2] and failed[3].error == "RuntimeError: no store"
    assert failed[3].failures >= warmup.MAX_FAILURES
    summary = result.summary()
    assert "worker 3 (pid 1002)" in summary and "init_failed" in summary
    assert "RuntimeError: no store" in summary


def test_tries_bound_the_warm_up():
    sim = SimServer(8)
    with serve(sim) as url:
        result = warmup.warm_up(url, discover=sim.discovery, tries=5, deadline=20)
    assert not result.ok and result.tries == 5 and sum(sim.requests) == 5
    assert len(result.cold) >= 8 - 5
    assert "cold: worker" in result.summary()
    assert "state" in result.table() and str(sim.pids[-1]) in result.table()


def test_the_deadline_bounds_the_warm_up():
    sim = SimServer(4, init_seconds=0.3)  # K=1: 1.2 s to warm them all
    with serve(sim) as url:
        start = time.monotonic()
        result = warmup.warm_up(url, discover=sim.discovery, deadline=0.5)
    # No wave starts after the deadline; the one running then may finish.
    assert not result.ok and time.monotonic() - start < 0.5 + 0.3 + 0.2


def test_a_server_that_does_not_answer_fails_with_the_reason():
    with socket.socket() as sock:  # bound, not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/lazyinit"
        found = Discovery("sim", (Worker(1, 1000),), 1)
        result = warmup.warm_up(url, discover=lambda: found, deadline=1)
    assert not result.ok
    assert "ConnectionRefusedError" in result.summary()


# -- --release: every worker must run the new release ---------------------------------------


def test_a_worker_on_another_release_is_waited_for_until_it_is_replaced():
    sim = SimServer(3, release="new")
    sim.warm[1], sim.releases[1] = True, "old"  # worker 2 was not reloaded yet
    old_pid = sim.pids[1]
    lines = []

    def progress(line):
        lines.append(line)
        if line.startswith("old: "):
            sim.respawn(1, release="new")  # the reload reaches worker 2

    with serve(sim) as url:
        result = warmup.warm_up(
            url, discover=sim.discovery, deadline=20, progress=progress, release="new"
        )
    assert f"old: worker 2 (pid {old_pid}) runs release old" in lines
    assert result.ok and all(sim.warm)
    assert [w.pid for w in result.workers] == sim.pids and old_pid not in sim.pids
    assert all(w.state == "warm" for w in result.workers)
    assert result.summary().startswith("all 3 sim workers warm on release new (")


@pytest.mark.parametrize(("runs", "shown"), [("old", "old"), (None, "unknown")])
def test_a_worker_never_replaced_fails_the_warm_up_and_is_named(runs, shown):
    sim = SimServer(2, release="new")
    sim.warm[1], sim.releases[1] = True, runs
    with serve(sim) as url:
        result = warmup.warm_up(url, discover=sim.discovery, deadline=1.5, release="new")
    assert not result.ok and result.exit_code == 1
    assert sim.requests[1] >= 1  # it did answer, warm, on its release
    states = {w.index: w.state for w in result.workers}
    assert states == {1: "warm", 2: "old"}
    summary = result.summary()
    assert f"not on release new: worker 2 (pid {sim.pids[1]}) runs {shown}" in summary
    assert "cold:" not in summary  # old, not cold: it needs a reload, not an init
    assert " old " in result.table().splitlines()[2]


def test_without_release_a_warm_worker_on_any_release_is_done():
    sim = SimServer(2, release="new")
    sim.warm[1], sim.releases[1] = True, "old"
    with serve(sim) as url:
        result = warmup.warm_up(url, discover=sim.discovery, deadline=20)
    assert result.ok and result.summary().startswith("all 2 sim workers warm (")


def test_the_command_line_release(tmp_path, capsys):
    # One worker, this process: the warm-up skips listed pids that are not alive.
    record = tmp_path / "workers.json"
    pid = os.getpid()
    record.write_text(
        json.dumps({"master_pid": pid, "num_workers": 1, "workers": [{"index": 1, "pid": pid}]})
    )
    sim = SimServer(1, release="old")
    sim.pids, sim.warm = [pid], [True]
    with serve(sim) as url:
        argv = ["--url", url, "--gunicorn-record", str(record), "--deadline", "1"]
        assert warmup.main([*argv, "--release", "new"]) == 1
        out, err = capsys.readouterr()
        assert f"not on release new: worker 1 (pid {pid}) runs old" in err
        assert out.splitlines()[1].split()[:3] == ["1", str(pid), "old"]
        assert warmup.main([*argv, "--release", "old"]) == 0
        assert "all 1 gunicorn workers warm on release old" in capsys.readouterr().err
