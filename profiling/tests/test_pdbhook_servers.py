"""SIGUSR1 -> pdb in real gunicorn and uWSGI workers, attached with ``wsgiprobe.pdb_attach``."""

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
VENV = BIN.parent
TIMEOUT = 2  # WSGIPROBE_PDB_TIMEOUT for the servers: short, for the no-client case
SECRET = "the-servers-pdb-secret-42"

APP = """
import json, logging, os, time
from urllib.parse import parse_qs

from wsgiprobe import pdbhook, workers

STATE = os.environ["PDBTEST_STATE"]


def _json(start_response, data):
    body = json.dumps(data).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response("200 OK", headers)
    return [body]


def _mark(path):
    # Tells the test which worker took the request.
    name = "busy-" + path.strip("/").replace("/", "_") + ".json"
    data = {"pid": os.getpid(), "worker": workers.worker_index(), "path": path}
    workers.write_json_atomic(os.path.join(STATE, name), data)


def _stream(path, seconds):
    _mark(path)
    end = time.monotonic() + seconds
    ticks = 0
    while time.monotonic() < end:
        time.sleep(0.05)
        ticks += 1
        if ticks % 10 == 0:
            yield b"chunk\\n"
    yield b"done\\n"


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    seconds = float(query.get("seconds", ["0"])[0])
    if path.startswith("/slow/"):
        _mark(path)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.05)
        return _json(start_response, {"path": path, "pid": os.getpid()})
    if path.startswith("/stream/"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stream(path, seconds)
    if path == "/log":
        tag = query.get("tag", [""])[0]
        logging.getLogger("gunicorn.error").warning("pdbtest %s from pid %d", tag, os.getpid())
    time.sleep(seconds)
    return _json(start_response, {"pid": os.getpid(), "worker": workers.worker_index()})


application = pdbhook.PdbHookMiddleware(app, pdbhook.settings_from_environment(os.environ))
"""

# Not wsgiprobe.gunicorn_hooks (another module): a minimal index from worker.age (1, 2).
GUNICORN_CONF = """
import os

from wsgiprobe import pdbhook
from wsgiprobe import workers as wsgiprobe_workers  # "workers" is a gunicorn setting

STATE = os.environ["PDBTEST_STATE"]


def on_starting(server):
    pdbhook.gunicorn_wrap_master_usr1(server)


def post_fork(server, worker):
    wsgiprobe_workers.set_worker_index(worker.age)


def post_worker_init(worker):
    pdbhook.gunicorn_post_worker_init(worker)
    path = os.path.join(STATE, "worker-%d.json" % worker.age)
    wsgiprobe_workers.write_json_atomic(path, {"index": worker.age, "pid": os.getpid()})
"""

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- helpers -------------------------------------------------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_base_port(workers=2):
    for _ in range(100):
        base = random.randrange(20000, 40000)
        with contextlib.ExitStack() as stack:
            try:
                for n in range(1, workers + 1):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", base + n))
            except OSError:
                continue
            return base
    raise RuntimeError("no free port range")


def get(url, timeout=20):
    started = time.monotonic()
    try:
        with _OPENER.open(url, timeout=timeout) as reply:
            return reply.status, reply.read(), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, error.read(), time.monotonic() - started


class Request(threading.Thread):
    """A request in the background: status, body and elapsed once joined."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.url = url
        self.result = None

    def run(self):
        self.result = get(self.url)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def listening(port):
    """Local addresses LISTENing on port, from /proc/net/tcp and tcp6."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as file:
            for line in file.read().splitlines()[1:]:
                fields = line.split()
                address, port_hex = fields[1].split(":")
                if fields[3] == "0A" and int(port_hex, 16) == port:
                    if len(address) == 8:
                        found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                    else:
                        found.append(address)
    return found


def attach(*args, script, timeout=40, secret=SECRET):
    """python -m wsgiprobe.pdb_attach, with the secret in its environment as pdb-attach has."""
    command = [sys.executable, "-m", "wsgiprobe.pdb_attach", *map(str, args), "--script", "-"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSGIPROBE_")}
    env["WSGIPROBE_PDB_SECRET"] = secret
    return subprocess.run(
        command, input=script, capture_output=True, text=True, timeout=timeout, check=False,
        env=env,
    )  # fmt: skip


class Server:
    def __init__(self, kind, tmp, command, env, port, base_port):
        self.kind = kind
        self.tmp = tmp
        self.port = port
        self.base_port = base_port
        self.url = f"http://127.0.0.1:{port}"
        self.state = tmp / "state"
        self.pdb_dir = tmp / "pdb"
        self.stderr_path = tmp / "stderr.log"
        self.stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            command,
            cwd=tmp,
            env=env,
            stdout=self.stderr,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self):
        return self.stderr_path.read_text(errors="replace")

    def busy(self, path):
        """Start a request to path and return it with the (pid, worker) that took it."""
        request = Request(self.url + path)
        request.start()
        name = "busy-" + path.split("?")[0].strip("/").replace("/", "_") + ".json"
        mark = wait_for(lambda: read_json(self.state / name), 10, f"{path} to start")
        return request, mark["pid"], mark["worker"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.stderr.close()


def start_server(kind, tmp):
    (tmp / "state").mkdir()
    (tmp / "pdbtest_app.py").write_text(APP)
    port, base = free_port(), free_base_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSGIPROBE_")}
    env.update(
        WSGIPROBE_PDB="1",
        WSGIPROBE_PDB_BASE_PORT=str(base),
        WSGIPROBE_PDB_TIMEOUT=str(TIMEOUT),
        WSGIPROBE_PDB_SECRET=SECRET,
        WSGIPROBE_PDB_DIR=str(tmp / "pdb"),
        PDBTEST_STATE=str(tmp / "state"),
        PYTHONUNBUFFERED="1",
    )
    if kind == "gunicorn":
        (tmp / "gunicorn_conf.py").write_text(GUNICORN_CONF)
        command = [
            str(BIN / "gunicorn"), "-c", "gunicorn_conf.py", "-w", "2", "-k", "sync",
            "-b", f"127.0.0.1:{port}", "--error-logfile", "error.log", "--timeout", "30",
            "pdbtest_app:app",
        ]  # fmt: skip
    else:
        command = [
            str(BIN / "uwsgi"), "--master", "--processes", "2",
            "--http-socket", f"127.0.0.1:{port}", "--py-call-uwsgi-fork-hooks", "--enable-threads",
            "--stats", str(tmp / "stats.sock"), "--home", str(VENV), "--chdir", str(tmp),
            "--wsgi-file", "pdbtest_app.py", "--callable", "application",
            "--need-app", "--die-on-term",
        ]  # fmt: skip
    server = Server(kind, tmp, command, env, port, base)
    try:
        wait_for(lambda: _answers(server), 20, f"{kind} to answer")
        if kind == "gunicorn":
            wait_for(lambda: len(list(server.state.glob("worker-*.json"))) == 2, 20, "workers")
    except BaseException:
        server.stop()
        raise
    return server


def _answers(server):
    if server.proc.poll() is not None:
        raise AssertionError(f"{server.kind} exited:\n{server.log()}")
    with contextlib.suppress(OSError):
        return get(server.url + "/", timeout=2)[0] == 200
    return False


def gunicorn_record(server):
    """The record wsgiprobe.gunicorn_hooks would write, from this test config's worker files."""
    entries = [read_json(p) for p in sorted(server.state.glob("worker-*.json"))]
    record = {
        "server": "gunicorn",
        "master_pid": server.proc.pid,
        "workers": [e for e in entries if e and _is_child(e["pid"], server.proc.pid)],
    }
    path = server.tmp / "workers.json"
    path.write_text(json.dumps(record))
    return path


def _is_child(pid, parent):
    from wsgiprobe.discovery import parent_pid

    return parent_pid(pid) == parent


def pids_answering(server, want, tries=10, tag="x"):
    """Concurrent slow-ish requests until every pid in want has answered one."""
    seen = set()
    for _ in range(tries):
        requests = [Request(server.url + f"/log?seconds=0.2&tag={tag}") for _ in range(4)]
        for request in requests:
            request.start()
        for request in requests:
            request.join()
            status, body, _ = request.result
            assert status == 200
            seen.add(json.loads(body)["pid"])
        if want <= seen:
            break
    return seen


requires_gunicorn = pytest.mark.skipif(not (BIN / "gunicorn").exists(), reason="no gunicorn")
requires_uwsgi = pytest.mark.skipif(not (BIN / "uwsgi").exists(), reason="no uwsgi")


# -- gunicorn ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory):
    server = start_server("gunicorn", tmp_path_factory.mktemp("gunicorn"))
    yield server
    server.stop()


@requires_gunicorn
def test_gunicorn_attach_to_a_busy_worker(gunicorn):
    request, pid, worker = gunicorn.busy("/slow/attach?seconds=3")
    started = time.monotonic()
    result = attach(
        "--worker", worker, "--gunicorn-record", gunicorn_record(gunicorn),
        "--base-port", gunicorn.base_port, "--wait", 10,
        script="p path\nwhere\nc\n",
    )  # fmt: skip
    attached_in = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "(Pdb) p path\n'/slow/attach'\n" in result.stdout
    assert f"pid {pid}" in result.stdout
    assert "pdbtest_app.py" in result.stdout and "app()" in result.stdout
    request.join()
    status, body, _ = request.result
    assert status == 200
    assert json.loads(body) == {"path": "/slow/attach", "pid": pid}
    assert attached_in < 3
    # The worker serves again, the same process.
    assert pid in pids_answering(gunicorn, {pid})
    assert listening(gunicorn.base_port + worker) == []


@requires_gunicorn
def test_gunicorn_a_wrong_secret_is_refused_and_the_right_one_attaches(gunicorn):
    request, pid, worker = gunicorn.busy("/slow/secret?seconds=3")
    where = ["--worker", worker, "--gunicorn-record", gunicorn_record(gunicorn),
             "--base-port", gunicorn.base_port, "--wait", 10]  # fmt: skip
    refused = attach(*where, script="p __import__('os').getuid()\nc\n", secret="x" * 20)
    assert refused.returncode == 3, refused.stderr
    assert "pdb_attach: wsgiprobe: refused (wrong secret)" in refused.stderr
    assert "(Pdb)" not in refused.stdout and str(os.getuid()) not in refused.stdout
    # The session still waits in that request: the right secret gets it.
    result = attach(*where, script="p path\nc\n")
    assert result.returncode == 0, result.stderr
    assert "(Pdb) p path\n'/slow/secret'\n" in result.stdout
    request.join()
    assert request.result[0] == 200
    log = gunicorn.log()
    assert f"pdb: worker {worker} pid {pid}: client 127.0.0.1:" in log
    assert "refused (wrong secret)" in log and "x" * 20 not in log


@requires_gunicorn
def test_gunicorn_attach_inside_a_streaming_response(gunicorn):
    request, _pid, worker = gunicorn.busy("/stream/gen?seconds=3")
    result = attach(
        "--worker", worker, "--gunicorn-record", gunicorn_record(gunicorn),
        "--base-port", gunicorn.base_port, "--wait", 10,
        script="p path\nc\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "_stream()" in result.stdout  # the generator's frame
    assert "(Pdb) p path\n'/stream/gen'\n" in result.stdout
    request.join()
    status, body, _ = request.result
    assert status == 200
    assert body.endswith(b"done\n") and body.count(b"chunk\n") >= 5


@requires_gunicorn
def test_gunicorn_idle_worker_opens_at_once(gunicorn):
    result = attach(
        "--worker", 1, "--gunicorn-record", gunicorn_record(gunicorn),
        "--base-port", gunicorn.base_port, "--wait", 10,
        script="p 6 * 7\nc\n",
    )  # fmt: skip
    # A sync worker waits in select(), which the signal interrupts: no request needed.
    assert result.returncode == 0, result.stderr
    assert "(Pdb) p 6 * 7\n42\n" in result.stdout
    assert "is idle" not in result.stderr
    assert get(gunicorn.url + "/")[0] == 200


@requires_gunicorn
def test_gunicorn_no_client_times_out_and_the_request_completes(gunicorn):
    request, pid, worker = gunicorn.busy("/slow/alone?seconds=1")
    port = gunicorn.base_port + worker
    os.kill(pid, signal.SIGUSR1)
    addresses = wait_for(lambda: listening(port), 5, "the pdb port")
    assert addresses == ["127.0.0.1"]  # loopback only
    record_path = gunicorn.pdb_dir / f"pdb-worker-{worker}.json"
    record = wait_for(lambda: read_json(record_path), 2, "the session record")
    assert record["pid"] == pid and record["worker"] == worker
    assert (record["host"], record["port"], record["state"]) == ("127.0.0.1", port, "listening")
    wait_for(lambda: not listening(port), TIMEOUT + 3, "the port to close")
    assert not record_path.exists()
    request.join()
    status, body, elapsed = request.result
    assert status == 200 and json.loads(body)["path"] == "/slow/alone"
    assert elapsed >= TIMEOUT  # a 1 s request: the worker sat in the handler, then finished
    log = gunicorn.log()
    assert f"pdb: worker {worker} pid {pid}: SIGUSR1, pdb listening on 127.0.0.1:{port}" in log
    assert f"no client within {TIMEOUT}s" in log


@requires_gunicorn
def test_gunicorn_master_usr1_rotates_logs_without_pdb(gunicorn):
    worker_pids = {read_json(p)["pid"] for p in gunicorn.state.glob("worker-*.json")}
    worker_pids = {pid for pid in worker_pids if _is_child(pid, gunicorn.proc.pid)}
    assert len(worker_pids) == 2
    error_log = gunicorn.tmp / "error.log"
    rotated = gunicorn.tmp / "error.log.1"
    error_log.rename(rotated)
    os.kill(gunicorn.proc.pid, signal.SIGUSR1)
    wait_for(error_log.exists, 5, "the master to reopen error.log")
    # No worker opens a port: watch both for a while.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        for index in (1, 2):
            assert listening(gunicorn.base_port + index) == []
        time.sleep(0.05)
    assert get(gunicorn.url + "/")[0] == 200
    # Each worker reopened its logs too: its new lines land in the new file.
    assert pids_answering(gunicorn, worker_pids, tag="rotated") >= worker_pids
    new_text, old_text = error_log.read_text(), rotated.read_text()
    for pid in worker_pids:
        assert f"pdbtest rotated from pid {pid}" in new_text
    assert "pdbtest rotated" not in old_text
    log = gunicorn.log()
    for pid in worker_pids:
        assert f"(log rotation) in pid {pid}: no session" in log


# -- uWSGI ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uwsgi(tmp_path_factory):
    server = start_server("uwsgi", tmp_path_factory.mktemp("uwsgi"))
    yield server
    server.stop()


@requires_uwsgi
def test_uwsgi_attach_to_a_busy_worker(uwsgi):
    request, pid, worker = uwsgi.busy("/slow/attach?seconds=3")
    result = attach(
        "--worker", worker, "--uwsgi-stats", uwsgi.tmp / "stats.sock",
        "--base-port", uwsgi.base_port, "--wait", 10,
        script="p path\nc\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "(Pdb) p path\n'/slow/attach'\n" in result.stdout
    assert f"worker {worker} pid {pid}" in result.stdout
    request.join()
    status, body, _ = request.result
    assert status == 200 and json.loads(body) == {"path": "/slow/attach", "pid": pid}
    assert pid in pids_answering(uwsgi, {pid})


@requires_uwsgi
def test_uwsgi_idle_worker_is_poked(uwsgi):
    found = json.loads(subprocess.run(
        [sys.executable, "-m", "wsgiprobe.discovery", "--json",
         "--uwsgi-stats", str(uwsgi.tmp / "stats.sock")],
        capture_output=True, text=True, check=True,
    ).stdout)  # fmt: skip
    # Whichever worker: idle ones only run the handler at their next request.
    worker = found["workers"][0]["index"]
    pid = found["workers"][0]["pid"]
    started = time.monotonic()
    result = attach(
        "--worker", worker, "--uwsgi-stats", uwsgi.tmp / "stats.sock",
        "--base-port", uwsgi.base_port, "--wait", 15, "--poke", uwsgi.url + "/poke",
        script="p environ['PATH_INFO']\np __import__('os').getpid()\nc\n",
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert f"worker {worker} (pid {pid}) is idle: the session opens at its next request" in (
        result.stderr
    )
    assert "'/poke'" in result.stdout
    assert f"\n{pid}\n" in result.stdout
    assert elapsed < 10
    assert get(uwsgi.url + "/")[0] == 200
    assert listening(uwsgi.base_port + worker) == []


@requires_uwsgi
def test_uwsgi_wrong_worker_is_a_usage_error(uwsgi):
    result = attach("--worker", 7, "--uwsgi-stats", uwsgi.tmp / "stats.sock", script="c\n")
    assert result.returncode == 2
    assert "uWSGI has no worker 7" in result.stderr


def test_helpers_find_a_listening_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        assert listening(sock.getsockname()[1]) == ["127.0.0.1"]
