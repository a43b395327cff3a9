"""The pdb hook as the deploy wires it: compose.build_application and the gunicorn hooks."""

from __future__ import annotations

import json
import signal
import sys
import types

import pytest

from wsgiprobe import compose, pdbhook
from wsgiprobe import gunicorn_hooks as hooks

# What the deploy writes into the env file with pdb on.
PDB_ON = {"WSGIPROBE_PDB": "1", "WSGIPROBE_PDB_SECRET": "the-wiring-pdb-secret-1"}


@pytest.fixture
def reset_hook(monkeypatch):
    previous = signal.getsignal(signal.SIGUSR1)
    monkeypatch.setattr(pdbhook, "_state", None)
    monkeypatch.setattr(pdbhook, "_rotation_marker", None)
    yield
    signal.signal(signal.SIGUSR1, previous)


@pytest.fixture
def app_module(monkeypatch):
    module = types.ModuleType("pdb_wiring_app")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    module.app = app
    monkeypatch.setitem(sys.modules, "pdb_wiring_app", module)
    return {"WSGIPROBE_APP": "pdb_wiring_app:app"}


def call(app, path="/"):
    statuses = []
    body = b"".join(
        app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, lambda s, h: statuses.append(s))
    )
    return statuses[0], body


def test_without_pdb_the_app_is_not_wrapped(app_module, reset_hook):
    app = compose.build_application(app_module)
    assert not isinstance(app, pdbhook.PdbHookMiddleware)
    assert call(app) == ("200 OK", b"ok")
    assert signal.getsignal(signal.SIGUSR1) is not pdbhook._on_usr1


def test_with_pdb_the_first_request_installs_the_handler(app_module, reset_hook, tmp_path):
    env = {**app_module, **PDB_ON, "WSGIPROBE_PDB_DIR": str(tmp_path)}
    app = compose.build_application(env)
    assert isinstance(app, pdbhook.PdbHookMiddleware)  # outermost: any first request installs
    assert signal.getsignal(signal.SIGUSR1) is not pdbhook._on_usr1  # not at import (uWSGI)
    assert call(app) == ("200 OK", b"ok")
    assert signal.getsignal(signal.SIGUSR1) is pdbhook._on_usr1
    assert pdbhook._state.settings.dir == str(tmp_path)


def test_a_bad_pdb_value_stops_the_app(app_module):
    with pytest.raises(ValueError, match="WSGIPROBE_PDB_BASE_PORT"):
        compose.build_application({**app_module, **PDB_ON, "WSGIPROBE_PDB_BASE_PORT": "x"})


def test_pdb_without_its_secret_stops_the_app(app_module):
    with pytest.raises(ValueError, match="WSGIPROBE_PDB_SECRET is not set"):
        compose.build_application({**app_module, "WSGIPROBE_PDB": "1"})


class Log:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, message: str, *args: object) -> None:
        self.warnings.append(message % args)


class Arbiter:
    def __init__(self) -> None:
        self.WORKERS = {4_000_001: object()}
        self.num_workers = 1
        self.log = Log()
        self.cfg = None
        self.rotations = 0

    def handle_usr1(self) -> None:
        self.rotations += 1


class Worker:
    def __init__(self) -> None:
        self.reopened = 0
        self.notified = 0

    def handle_usr1(self, signum, frame) -> None:
        self.reopened += 1

    def notify(self) -> None:
        self.notified += 1


def test_on_starting_marks_the_master_usr1_as_a_log_rotation(monkeypatch, reset_hook, tmp_path):
    monkeypatch.delenv("WSGIPROBE_WORKERS_FILE", raising=False)
    monkeypatch.setenv("WSGIPROBE_PDB", "1")
    monkeypatch.setenv("WSGIPROBE_PDB_SECRET", PDB_ON["WSGIPROBE_PDB_SECRET"])
    monkeypatch.setenv("WSGIPROBE_PDB_DIR", str(tmp_path))
    arbiter = Arbiter()
    hooks.on_starting(arbiter)
    arbiter.handle_usr1()
    assert arbiter.rotations == 1  # gunicorn's own: reopen the logs, forward to the workers
    (marker,) = tmp_path.glob("gunicorn-usr1-*.json")
    assert json.loads(marker.read_text())["pids"] == [4_000_001]


def test_on_starting_without_pdb_leaves_the_master_alone(monkeypatch, reset_hook):
    monkeypatch.delenv("WSGIPROBE_WORKERS_FILE", raising=False)
    monkeypatch.delenv("WSGIPROBE_PDB", raising=False)
    arbiter = Arbiter()
    original = arbiter.handle_usr1
    hooks.on_starting(arbiter)
    assert arbiter.handle_usr1 == original


def test_post_worker_init_installs_the_handler_chained_to_the_log_reopen(
    monkeypatch, reset_hook, tmp_path
):
    monkeypatch.setenv("WSGIPROBE_PDB", "1")
    monkeypatch.setenv("WSGIPROBE_PDB_SECRET", PDB_ON["WSGIPROBE_PDB_SECRET"])
    monkeypatch.setenv("WSGIPROBE_PDB_DIR", str(tmp_path))
    worker = Worker()
    hooks.post_worker_init(worker)
    assert signal.getsignal(signal.SIGUSR1) is pdbhook._on_usr1
    assert pdbhook._state.chain == worker.handle_usr1
    assert pdbhook._state.heartbeat == worker.notify


def test_post_worker_init_without_pdb_installs_nothing(monkeypatch, reset_hook):
    monkeypatch.delenv("WSGIPROBE_PDB", raising=False)
    hooks.post_worker_init(Worker())
    assert signal.getsignal(signal.SIGUSR1) is not pdbhook._on_usr1


def test_gunicorn_accepts_post_worker_init_and_the_star_import_leaves_it_out():
    from gunicorn.config import Config

    config = Config()
    config.set("post_worker_init", hooks.post_worker_init)  # validates the name and the arity
    namespace: dict = {}
    exec("from wsgiprobe.gunicorn_hooks import *", namespace)
    assert "post_worker_init" not in namespace  # opt-in: the deploy sets it when pdb is on
