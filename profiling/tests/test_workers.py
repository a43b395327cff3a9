import json
import os
import subprocess
import sys

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
