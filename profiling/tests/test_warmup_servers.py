"""The warm-up end to end, against real gunicorn and uWSGI on loopback, idle (the case where the
kernel hands most connections to one worker)."""

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from test_warmup_support import UWSGI, Server, run_server

from wsgiprobe.warmup import warm_up

needs_uwsgi = pytest.mark.skipif(UWSGI is None, reason="uwsgi is not installed in the venv")


def run_cli(server: Server, *extra: str) -> subprocess.CompletedProcess[str]:
    source = ["--gunicorn-record", str(server.workers_file)]
    if server.kind == "uwsgi":
        source = ["--uwsgi-stats", str(server.stats)]
    argv = [sys.executable, "-m", "wsgiprobe.warmup", "--url", server.url, *source]
    return subprocess.run(
        [*argv, "--deadline", "20", *extra], capture_output=True, text=True, timeout=60
    )


def table(stdout: str) -> dict[int, list[str]]:
    rows = [line.split() for line in stdout.splitlines()[1:]]
    return {int(row[1]): row for row in rows}  # by pid


def status(server: Server) -> dict[int, dict]:
    with urllib.request.urlopen(server.url + "?status", timeout=10) as response:
        return {entry["worker"]: entry for entry in json.load(response)["workers"]}


def test_gunicorn_four_workers(tmp_path):
    with run_server("gunicorn", tmp_path) as server:
        pids = server.worker_pids()
        proc = run_cli(server)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        rows = table(proc.stdout)
        assert set(rows) == set(pids.values())
        assert proc.stdout.splitlines()[0].split() == [
            "worker", "pid", "state", "init_s", "requests"
        ]  # fmt: skip
        for index, pid in pids.items():
            assert rows[pid][0] == str(index) and rows[pid][2] == "warm"
            assert float(rows[pid][3]) >= 0.2 and int(rows[pid][4]) >= 1
        assert proc.stderr.count("warm: worker") == 4
        assert proc.stderr.splitlines()[-1].startswith("all 4 gunicorn workers warm")
        seen = status(server)
        assert sorted(seen) == [1, 2, 3, 4] and all(w["warm"] for w in seen.values())

        # Again, all warm already: no init runs, nothing holds long.
        again = warm_up(server.url, gunicorn_record=str(server.workers_file), deadline=20)
        assert again.ok and all(w.init_seconds >= 0.2 for w in again.workers)


def test_gunicorn_failing_init_exits_1_naming_the_worker(tmp_path):
    with run_server("gunicorn", tmp_path, env={"PROBE_FAIL_WORKERS": "2"}) as server:
        failing = server.worker_pids()[2]
        proc = run_cli(server)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.splitlines()[-1]  # what the deploy shows when it fails
    assert f"worker 2 (pid {failing})" in last
    assert "init_failed" in last and "RuntimeError: store down in worker 2" in last
    assert table(proc.stdout)[failing][2] == "failed"


def test_gunicorn_worker_killed_after_a_warm_up_is_warmed_by_the_next(tmp_path):
    with run_server("gunicorn", tmp_path) as server:
        assert warm_up(server.url, gunicorn_record=str(server.workers_file), deadline=20).ok
        victim = server.worker_pids()[3]
        os.kill(victim, signal.SIGKILL)
        server.wait_for_workers(4, exclude={victim})
        result = warm_up(server.url, gunicorn_record=str(server.workers_file), deadline=20)
        assert result.ok
        new = {w.index: w for w in result.workers}[3]
        assert new.pid != victim and new.warm
        assert [w.index for w in result.workers] == [1, 2, 3, 4]


@needs_uwsgi
def test_uwsgi_idle_four_workers_never_left_cold(tmp_path):
    """Five warm-ups of cold workers on an idle uWSGI."""
    tries = []
    with run_server("uwsgi", tmp_path) as server:
        pids = server.worker_pids()
        for _ in range(5):
            server.make_cold()
            result = warm_up(server.url, uwsgi_stats=str(server.stats), deadline=20)
            assert result.ok, result.summary()
            assert {w.index: w.pid for w in result.workers} == pids
            assert all(w.warm and w.init_seconds >= 0.2 for w in result.workers)
            tries.append(result.tries)
    print(f"uWSGI, 4 idle workers, tries per warm-up: {tries}")


@needs_uwsgi
def test_uwsgi_eight_workers_app_loaded_in_the_master_cli(tmp_path):
    # Without lazy-apps the app (and the middleware) is built in the master, then forked.
    with run_server("uwsgi", tmp_path, workers=8, lazy_apps=False) as server:
        pids = server.worker_pids()
        proc = run_cli(server)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert {row[0]: pid for pid, row in table(proc.stdout).items()} == {
            str(index): pid for index, pid in pids.items()
        }
        assert all(row[2] == "warm" for row in table(proc.stdout).values())
        seen = status(server)
        assert sorted(seen) == list(range(1, 9))
        assert {i: w["pid"] for i, w in seen.items()} == pids
    print(proc.stderr.splitlines()[-1])


@needs_uwsgi
def test_uwsgi_failing_init_exits_1_naming_the_workers(tmp_path):
    with run_server("uwsgi", tmp_path, env={"PROBE_FAIL_WORKERS": "1,2,3,4"}) as server:
        proc = run_cli(server)
        pids = server.worker_pids()
    assert proc.returncode == 1
    last = proc.stderr.splitlines()[-1]
    assert "cold: worker 1" in last and "init_failed" in last
    assert all(str(pid) in proc.stdout for pid in pids.values())
