"""Real app servers for the warm-up tests (no tests here): a tiny app behind LazyInitMiddleware,
run by gunicorn (with the toolkit's hooks) or uWSGI, on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
GUNICORN = BIN / "gunicorn"
UWSGI = shutil.which("uwsgi", path=str(BIN))
VENV = BIN.parent

APP = """
import os
import time

from wsgiprobe import lazyinit, workers
from wsgiprobe.lazyinit_wsgi import LazyInitMiddleware


def _init():
    time.sleep(float(os.environ.get("PROBE_INIT_SECONDS", "0.2")))
    failing = os.environ.get("PROBE_FAIL_WORKERS", "").split(",")
    if str(workers.worker_index()) in failing:
        raise RuntimeError("store down in worker %s" % workers.worker_index())


lazyinit.register("probe", _init)


def _app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


_middleware = LazyInitMiddleware(
    _app, max_concurrent=int(os.environ.get("PROBE_MAX_CONCURRENT", "1"))
)
_generation = [None]


def application(environ, start_response):
    # Tests make every worker cold again by writing a new generation: quicker than respawns,
    # which uWSGI throttles.
    with open(os.environ["PROBE_GENERATION_FILE"]) as file:
        generation = file.read()
    if generation != _generation[0]:
        _generation[0] = generation
        lazyinit.register("probe", lambda: _init())  # a new init: pending again
    return _middleware(environ, start_response)
"""


@dataclass
class Server:
    kind: str
    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    workers_file: Path  # gunicorn's record
    stats: Path  # uWSGI's stats socket
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/lazyinit"

    def discovery_args(self) -> dict[str, str]:
        if self.kind == "gunicorn":
            return {"gunicorn_record": str(self.workers_file)}
        return {"uwsgi_stats": str(self.stats)}

    def worker_pids(self) -> dict[int, int]:
        """index -> pid, as the server itself reports them."""
        if self.kind == "gunicorn":
            record = json.loads(self.workers_file.read_text())
            return {w["index"]: w["pid"] for w in record["workers"]}
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats))
            raw = b"".join(iter(lambda: sock.recv(65536), b""))
        return {w["id"]: w["pid"] for w in json.loads(raw)["workers"] if w["pid"] > 0}

    def make_cold(self) -> None:
        """Every worker cold again at its next request (same processes, a new init)."""
        path = self.directory / "generation"
        path.write_text(str(int(path.read_text()) + 1))

    def children(self) -> set[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        ).stdout
        return {int(pid) for pid in out.split()}

    def wait_for_workers(self, count: int, exclude: set[int] = frozenset(), seconds: float = 15):
        """Wait until the server lists ``count`` live workers, none of them in ``exclude``."""
        deadline = time.monotonic() + seconds
        pids: dict[int, int] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError):
                pids = self.worker_pids()
                live = set(pids.values())
                settled = len(pids) == count and not live & exclude and live <= self.children()
                if settled and _accepts(self.port):
                    return pids
            if self.process.poll() is not None:
                raise AssertionError(f"{self.kind} exited:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"{self.kind}: no {count} workers: {pids}\n{self.log.read_text()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def run_server(
    kind: str,
    directory: Path,
    workers: int = 4,
    env: dict[str, str] | None = None,
    lazy_apps: bool = True,
) -> Iterator[Server]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "probe_app.py").write_text(APP)
    (directory / "generation").write_text("0")
    port = free_port()
    server_env = {
        **os.environ,
        "PYTHONPATH": str(directory),
        "WSGIPROBE_LAZYINIT_DIR": str(directory / "lazyinit"),
        "WSGIPROBE_WORKERS_FILE": str(directory / "workers.json"),
        "PROBE_GENERATION_FILE": str(directory / "generation"),
        **(env or {}),
    }
    stats = directory / "stats.sock"
    if kind == "gunicorn":
        (directory / "gunicorn.conf.py").write_text(
            "from wsgiprobe.gunicorn_hooks import *  # noqa: F403\n"
            f"bind = ['127.0.0.1:{port}']\nworkers = {workers}\n"
            "worker_class = 'sync'\ntimeout = 30\ngraceful_timeout = 2\n"
            f"control_socket = {str(directory / 'gunicorn.ctl')!r}\n"
        )
        argv = [str(GUNICORN), "-c", str(directory / "gunicorn.conf.py"), "probe_app:application"]
    else:
        assert UWSGI, "uwsgi is not installed in the venv"
        argv = [
            UWSGI, "--master", "--processes", str(workers), "--http-socket", f"127.0.0.1:{port}",
            "--stats", str(stats), "--home", str(VENV), "--module", "probe_app:application",
            "--pythonpath", str(directory), "--die-on-term", "--disable-logging",
            "--py-call-uwsgi-fork-hooks", *(["--lazy-apps"] if lazy_apps else []),
        ]  # fmt: skip
    log = directory / f"{kind}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=directory, env=server_env, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(kind, process, port, directory, directory / "workers.json", stats, log)
    try:
        server.wait_for_workers(workers)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
