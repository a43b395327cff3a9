import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wsgiprobe import workers


@pytest.fixture(autouse=True)
def _no_index():
    saved = workers._gunicorn_index
    workers._gunicorn_index = None
    yield
    workers._gunicorn_index = saved


def test_outside_an_app_server_there_is_no_index():
    assert workers.worker_index() is None
    assert workers.server_name() == "unknown"
    assert workers.describe() == {"server": "unknown", "worker": None, "pid": os.getpid()}


def test_an_index_set_by_the_gunicorn_hooks_is_reported():
    workers.set_worker_index(3)
    assert workers.worker_index() == 3
    assert workers.server_name() == "gunicorn"
    assert workers.describe() == {"server": "gunicorn", "worker": 3, "pid": os.getpid()}


def test_pid_alive():
    assert workers.pid_alive(os.getpid())
    assert not workers.pid_alive(0)
    assert not workers.pid_alive(-1)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not workers.pid_alive(child.pid)  # reaped: gone


def test_write_json_atomic_replaces_the_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "state.json"
    workers.write_json_atomic(str(path), {"a": 1})
    workers.write_json_atomic(str(path), {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert os.listdir(tmp_path) == ["state.json"]
    assert path.stat().st_mode & 0o077 == 0  # private: mkstemp's 0600


def test_write_json_atomic_cleans_up_on_failure(tmp_path):
    path = tmp_path / "state.json"
    with pytest.raises(TypeError):
        workers.write_json_atomic(str(path), {"a": object()})
    assert os.listdir(tmp_path) == []


ORPHAN = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from wsgiprobe import workers
if os.fork() == 0:  # the worker: its parent (the "master") exits below
    if sys.argv[3] == "1":
        assert workers.die_with_parent()
    with open(sys.argv[2], "w") as out:
        out.write(str(os.getpid()))
    time.sleep(30)
    os._exit(0)
while not os.path.exists(sys.argv[2]) or not open(sys.argv[2]).read():
    time.sleep(0.01)
os._exit(0)  # the master dies without a word, as with SIGKILL
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _orphan(tmp_path, die: bool) -> int:
    pid_file = tmp_path / f"worker-{die}.pid"
    src = str(Path(workers.__file__).resolve().parents[1])
    subprocess.run(
        [sys.executable, "-c", ORPHAN, src, str(pid_file), "1" if die else "0"],
        check=True, timeout=30,
    )  # fmt: skip
    return int(pid_file.read_text())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_worker_dies_with_its_parent(tmp_path):
    pid = _orphan(tmp_path, die=True)
    deadline = time.monotonic() + 5
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_without_it_the_orphan_lives_on(tmp_path):
    pid = _orphan(tmp_path, die=False)
    try:
        time.sleep(0.5)
        assert _running(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
