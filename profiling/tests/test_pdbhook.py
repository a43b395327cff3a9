"""Unit and in-process tests of wsgiprobe.pdbhook (the real-server tests are in *_servers.py)."""

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time

import pytest

from wsgiprobe import pdbhook, workers

SECRET = "the-tests-pdb-secret-0123"
ON = {"WSGIPROBE_PDB": "1", "WSGIPROBE_PDB_SECRET": SECRET}


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "0", "false", "no", "off", "2"])
def test_settings_are_none_unless_enabled(value):
    env = {} if value is None else {"WSGIPROBE_PDB": value}
    env["WSGIPROBE_PDB_BASE_PORT"] = "not even checked when off"
    assert pdbhook.settings_from_environment(env) is None


@pytest.mark.parametrize("value", ["1", "true", "TRUE", " True "])
def test_settings_enabled_with_defaults(value):
    settings = pdbhook.settings_from_environment({**ON, "WSGIPROBE_PDB": value})
    assert settings == pdbhook.PdbSettings(
        host="127.0.0.1", base_port=4440, timeout=60.0, dir=None, idle_timeout=600.0, secret=SECRET
    )
    assert SECRET not in repr(settings)  # not in a log line that shows the settings
    assert settings.port_for(3) == 4443
    assert settings.port_for(None) == 4440


def test_settings_from_every_variable():
    env = {
        **ON,
        "WSGIPROBE_PDB_HOST": "::1",
        "WSGIPROBE_PDB_BASE_PORT": "5000",
        "WSGIPROBE_PDB_TIMEOUT": "2.5",
        "WSGIPROBE_PDB_DIR": "/run/app/pdb",
        "WSGIPROBE_PDB_IDLE_TIMEOUT": "30",
    }
    assert pdbhook.settings_from_environment(env) == pdbhook.PdbSettings(
        host="::1", base_port=5000, timeout=2.5, dir="/run/app/pdb", idle_timeout=30.0,
        secret=SECRET,
    )  # fmt: skip


def test_settings_default_to_os_environ(monkeypatch):
    monkeypatch.setenv("WSGIPROBE_PDB", "1")
    monkeypatch.setenv("WSGIPROBE_PDB_SECRET", SECRET)
    monkeypatch.setenv("WSGIPROBE_PDB_BASE_PORT", "6000")
    assert pdbhook.settings_from_environment().base_port == 6000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WSGIPROBE_PDB_HOST", "localhost"),
        ("WSGIPROBE_PDB_HOST", "0.0.0.0.0"),
        ("WSGIPROBE_PDB_BASE_PORT", "44x"),
        ("WSGIPROBE_PDB_BASE_PORT", "0"),
        ("WSGIPROBE_PDB_BASE_PORT", "65535"),
        ("WSGIPROBE_PDB_TIMEOUT", "soon"),
        ("WSGIPROBE_PDB_TIMEOUT", "0"),
        ("WSGIPROBE_PDB_TIMEOUT", "-1"),
        ("WSGIPROBE_PDB_TIMEOUT", "inf"),
        ("WSGIPROBE_PDB_TIMEOUT", "nan"),
        ("WSGIPROBE_PDB_IDLE_TIMEOUT", "0"),
    ],
)
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ValueError, match=name):
        pdbhook.settings_from_environment({**ON, name: value})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "is not set"),
        ("  ", "is not set"),
        ("short-0123", "at least 16"),
        ("a-secret-with-\u00e9-inside", "printable ASCII"),
        ("a-secret with-a-space", "no spaces"),
    ],
)
def test_pdb_on_without_a_fit_secret_is_refused(value, expected):
    env = {"WSGIPROBE_PDB": "1"} if value is None else {**ON, "WSGIPROBE_PDB_SECRET": value}
    with pytest.raises(ValueError, match=f"WSGIPROBE_PDB_SECRET.*{expected}") as raised:
        pdbhook.settings_from_environment(env)
    assert value is None or value.strip() == "" or value not in str(raised.value)


def test_the_secret_is_compared_whole():
    assert pdbhook.secret_matches(SECRET.encode(), SECRET)
    assert pdbhook.secret_matches(SECRET.encode() + b"\r", SECRET)  # telnet's line end
    for line in (b"", SECRET[:-1].encode(), SECRET.encode() + b"x", b" " + SECRET.encode()):
        assert not pdbhook.secret_matches(line, SECRET)
    assert not pdbhook.secret_matches(b"", "")  # no secret: nobody gets in


# -- the log-rotation marker ---------------------------------------------------------------------


def rotation(marker, consumed=0, now=100.0):
    return pdbhook.is_log_rotation(
        marker, pid=20, ppid=10, installed_at=50.0, consumed_seq=consumed, now=now
    )


def marker(**changes):
    return {"master_pid": 10, "seq": 3, "pids": [20, 21], "mono": 99.5, **changes}


def test_no_marker_means_a_direct_signal():
    assert rotation(None) == (False, 0)
    assert rotation({}) == (False, 0)


def test_a_fresh_marker_for_this_worker_is_a_rotation_and_is_consumed():
    assert rotation(marker()) == (True, 3)


def test_a_consumed_marker_is_a_rotation_only_within_the_grace():
    # Two rotations racing one handler: the second signal still finds seq 3 consumed.
    assert rotation(marker(), consumed=3, now=99.5 + pdbhook.ROTATION_GRACE / 2) == (True, 3)
    # Later, the same marker no longer hides a direct signal, however late the handler ran.
    assert rotation(marker(), consumed=3, now=99.5 + pdbhook.ROTATION_GRACE + 0.1) == (False, 3)


def test_a_late_handler_still_sees_its_rotation():
    # A worker busy in C code for minutes runs the handler long after the marker was written.
    assert rotation(marker(), consumed=2, now=99.5 + 600) == (True, 3)


@pytest.mark.parametrize(
    "changes",
    [
        {"master_pid": 11},  # another master's marker
        {"pids": [21]},  # a rotation that did not signal this worker
        {"mono": 49.0},  # written before this worker installed its handler
        {"seq": "3"},
        {"mono": None},
        {"pids": None},
    ],
)
def test_markers_that_are_not_about_this_signal(changes):
    assert rotation(marker(**changes), consumed=1) == (False, 1)


class FakeArbiter:
    def __init__(self):
        self.WORKERS = {31: object(), 30: object()}
        self.calls = []
        self.log = logging.getLogger("fake.arbiter")

    def handle_usr1(self):
        self.calls.append("usr1")


def test_wrap_master_usr1_writes_the_marker_before_gunicorn_signals(tmp_path, reset_hook):
    settings = pdbhook.PdbSettings(dir=str(tmp_path))
    arbiter = FakeArbiter()
    path = tmp_path / f"gunicorn-usr1-{os.getpid()}.json"

    def original():
        # gunicorn's own handler (reopen logs, kill workers) finds the marker already there.
        arbiter.calls.append(json.loads(path.read_text()))

    arbiter.handle_usr1 = original
    assert pdbhook.gunicorn_wrap_master_usr1(arbiter, settings)
    assert pdbhook.gunicorn_wrap_master_usr1(arbiter, settings)  # idempotent
    before = time.monotonic()
    arbiter.handle_usr1()
    arbiter.handle_usr1()
    first, second = arbiter.calls
    assert first["master_pid"] == os.getpid()
    assert first["pids"] == [30, 31]
    assert before <= first["mono"] <= time.monotonic()
    assert second["seq"] == first["seq"] + 1
    assert path.stat().st_mode & 0o777 == 0o644  # workers that dropped root read it
    assert pdbhook._rotation_marker == str(path)


def test_wrap_master_usr1_without_a_dir_uses_a_private_temp_dir(reset_hook):
    arbiter = FakeArbiter()
    assert pdbhook.gunicorn_wrap_master_usr1(arbiter, pdbhook.PdbSettings())
    arbiter.handle_usr1()
    assert arbiter.calls == ["usr1"]
    directory = os.path.dirname(pdbhook._rotation_marker)
    try:
        assert os.stat(directory).st_mode & 0o777 == 0o700
        with open(pdbhook._rotation_marker) as file:
            assert json.load(file)["pids"] == [30, 31]
    finally:
        pdbhook._remove_marker(pdbhook._rotation_marker, os.getpid(), True)
    assert not os.path.exists(directory)


def test_hooks_do_nothing_when_pdb_is_off(monkeypatch, reset_hook):
    monkeypatch.delenv("WSGIPROBE_PDB", raising=False)
    arbiter = FakeArbiter()
    assert not pdbhook.gunicorn_wrap_master_usr1(arbiter)
    assert not pdbhook.gunicorn_post_worker_init(FakeWorker())
    assert "handle_usr1" not in vars(arbiter)
    assert signal.getsignal(signal.SIGUSR1) is not pdbhook._on_usr1


# -- the handler, in this process ----------------------------------------------------------------


class FakeWorker:
    def __init__(self):
        self.reopened = 0
        self.notified = 0

    def handle_usr1(self, sig, frame):
        self.reopened += 1

    def notify(self):
        self.notified += 1


@pytest.fixture
def reset_hook():
    previous = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, previous)
    pdbhook._state = None
    pdbhook._rotation_marker = None


def free_base_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1] - 1  # worker 1 listens on base + 1


def pdb_client(port, commands, seen, during=None, secret=SECRET):
    """Signal this process, connect as soon as the port opens, send the secret line, run
    commands at each prompt.

    Signalled from this thread, the handler runs in the main thread wherever it is (run_until).
    """
    time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while True:
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            break
        except OSError:
            if time.monotonic() > deadline:
                seen.append("never opened")
                return
            time.sleep(0.02)
    conn.sendall(secret.encode() + b"\n")
    transcript = b""
    with conn:
        for command in [*commands, None]:
            while not transcript.endswith(b"(Pdb) "):
                data = conn.recv(4096)
                if not data:
                    seen.append(transcript.decode())
                    return
                transcript += data
            if during is not None:
                during()
                during = None
            if command is None:
                break
            conn.sendall(command.encode() + b"\n")
            transcript += command.encode() + b"\n"
    seen.append(transcript.decode())


def run_until(thread, path):
    """The 'request': a loop holding a local ``path`` until the client thread is done."""
    deadline = time.monotonic() + 15
    while thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    return path


@pytest.fixture
def worker_one(monkeypatch):
    monkeypatch.setattr(workers, "worker_index", lambda: 1)


def test_direct_signal_reopens_logs_and_opens_pdb_in_the_interrupted_frame(
    tmp_path, reset_hook, worker_one, caplog
):
    caplog.set_level(logging.INFO, logger="wsgiprobe.pdb")
    base = free_base_port()
    settings = pdbhook.PdbSettings(secret=SECRET, base_port=base, timeout=5, dir=str(tmp_path))
    fake = FakeWorker()
    assert pdbhook.gunicorn_post_worker_init(fake, settings)
    records = []

    def during():
        records.append(json.loads((tmp_path / "pdb-worker-1.json").read_text()))

    seen = []
    client = threading.Thread(
        target=pdb_client, args=(base + 1, ["p path", "where", "c"], seen, during)
    )
    client.start()
    assert run_until(client, "/in-process") == "/in-process"
    client.join()

    transcript = seen[0]
    assert "(Pdb) p path\n'/in-process'\n" in transcript
    assert "run_until()" in transcript.split("(Pdb) where")[1]
    assert "_on_usr1" not in transcript  # stopped in the interrupted frame, not the handler
    assert fake.reopened == 1
    assert sys.gettrace() is None
    assert records[0]["pid"] == os.getpid()
    assert records[0]["worker"] == 1
    assert records[0]["host"] == "127.0.0.1"
    assert records[0]["port"] == base + 1
    assert records[0]["state"] == "attached"
    assert not (tmp_path / "pdb-worker-1.json").exists()
    opened = [r.getMessage() for r in caplog.records if "listening" in r.getMessage()]
    assert opened == [f"pdb: worker 1 pid {os.getpid()}: SIGUSR1, pdb listening on "
                      f"127.0.0.1:{base + 1}, waiting 5s for a client"]  # fmt: skip
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", base + 1), timeout=1).close()


def test_no_client_times_out_and_the_code_goes_on(tmp_path, reset_hook, worker_one, caplog):
    base = free_base_port()
    settings = pdbhook.PdbSettings(secret=SECRET, base_port=base, timeout=0.3, dir=str(tmp_path))
    fake = FakeWorker()
    pdbhook.gunicorn_post_worker_init(fake, settings)
    started = time.monotonic()
    os.kill(os.getpid(), signal.SIGUSR1)
    for _ in range(3):
        pass  # the handler runs here, in this frame
    assert 0.3 <= time.monotonic() - started < 3
    assert "no client within 0.3s" in caplog.text
    assert not list(tmp_path.iterdir())
    assert not pdbhook._state.active


def test_quit_and_disconnect_let_the_code_go_on(reset_hook, worker_one):
    base = free_base_port()
    pdbhook.install(pdbhook.PdbSettings(secret=SECRET, base_port=base, timeout=5))
    for commands in (["n", "q"], ["p path"]):  # the second one just hangs up
        seen = []
        client = threading.Thread(target=pdb_client, args=(base + 1, commands, seen))
        client.start()
        assert run_until(client, "/quit") == "/quit"
        client.join()
        assert "(Pdb) " in seen[0]
        assert sys.gettrace() is None
        assert not pdbhook._state.active


def signal_self():
    time.sleep(0.05)  # the main thread is in run_until by then, not in Thread.start()
    os.kill(os.getpid(), signal.SIGUSR1)


def connect_when_open(port):
    for _ in range(500):
        with contextlib.suppress(OSError):
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        time.sleep(0.02)
    raise AssertionError(f"port {port} never opened")


def read_all(conn):
    data = b""
    with contextlib.suppress(OSError):
        while chunk := conn.recv(4096):
            data += chunk
    return data


def test_clients_without_the_secret_are_refused_and_the_operator_still_gets_in(
    reset_hook, worker_one, monkeypatch, caplog
):
    monkeypatch.setattr(pdbhook, "AUTH_TIMEOUT", 1.0)
    base = free_base_port()
    pdbhook.install(pdbhook.PdbSettings(secret=SECRET, base_port=base, timeout=10))
    answers = {}
    seen = []

    def intruders_then_operator():
        signal_self()
        # Connected first and silent: must hold up nobody, and be dropped after AUTH_TIMEOUT.
        slow = connect_when_open(base + 1)
        started = time.monotonic()
        attempts = {
            # A pdb command in place of the secret, and one right after a wrong secret.
            "command": b"p __import__('os').getpid()\n",
            "wrong": b"not-the-secret-at-all\np __import__('os').getpid()\n",
            "almost": SECRET[:-1].encode() + b"\n",
            "too long": b"x" * 300,
            "hung up": b"",
        }
        for name, sent in attempts.items():
            with socket.create_connection(("127.0.0.1", base + 1), timeout=10) as conn:
                conn.sendall(sent)
                if not sent:
                    conn.shutdown(socket.SHUT_WR)
                answers[name] = read_all(conn)
        answers["refused in"] = time.monotonic() - started
        # The operator, while the slow one still waits: same session, same frame.
        pdb_client(base + 1, ["p path", "c"], seen, secret=SECRET)
        answers["slow"] = read_all(slow)
        slow.close()

    client = threading.Thread(target=intruders_then_operator)
    client.start()
    assert run_until(client, "/debugged") == "/debugged"
    client.join()

    pid = str(os.getpid()).encode()
    reasons = {
        "command": b"wrong secret",
        "wrong": b"wrong secret",
        "almost": b"wrong secret",
        "too long": b"first line too long",
        "hung up": b"closed before the secret",
    }
    for name, reason in reasons.items():
        assert answers[name] == b"wsgiprobe: refused (" + reason + b")\n", name
        assert b"(Pdb)" not in answers[name] and pid not in answers[name], name
    assert answers["refused in"] < 1.0  # none of them waited for the slow client
    # Still waiting when the operator got in (AUTH_TIMEOUT is 1 s): dropped then.
    assert answers["slow"] == b"wsgiprobe: refused (no longer waiting for a client)\n"
    assert "(Pdb) p path\n'/debugged'\n" in seen[0]
    assert caplog.text.count("refused (wrong secret)") == 3
    assert SECRET[:-1] not in caplog.text and "not-the-secret" not in caplog.text
    assert "ended (continue)" in caplog.text
    assert sys.gettrace() is None and not pdbhook._state.active


def test_only_wrong_clients_and_the_worker_goes_on_after_the_timeout(
    reset_hook, worker_one, monkeypatch, caplog
):
    monkeypatch.setattr(pdbhook, "AUTH_TIMEOUT", 0.5)
    base = free_base_port()
    pdbhook.install(pdbhook.PdbSettings(secret=SECRET, base_port=base, timeout=1.5))
    answers = []

    def intruder():
        signal_self()
        with connect_when_open(base + 1) as conn:
            conn.sendall(b"guess-guess-guess\n")
            answers.append(read_all(conn))
        with connect_when_open(base + 1) as conn:  # says nothing
            answers.append(read_all(conn))

    client = threading.Thread(target=intruder)
    started = time.monotonic()
    client.start()
    run_until(client, "/timeout")
    client.join()
    assert answers == [
        b"wsgiprobe: refused (wrong secret)\n",
        b"wsgiprobe: refused (no secret within 0.5s)\n",
    ]
    while pdbhook._state.active and time.monotonic() - started < 5:
        time.sleep(0.05)  # the handler runs in this (main) thread: already done here
    assert 1.5 <= time.monotonic() - started < 5
    assert "no client within 1.5s" in caplog.text


def test_commands_sent_with_the_secret_reach_pdb(reset_hook, worker_one):
    base = free_base_port()
    pdbhook.install(pdbhook.PdbSettings(secret=SECRET, base_port=base, timeout=5))
    received = []

    def in_one_go():
        signal_self()
        with connect_when_open(base + 1) as conn:
            conn.sendall(SECRET.encode() + b"\r\np 6 * 7\nc\n")  # as telnet or a paste sends
            received.append(read_all(conn))

    client = threading.Thread(target=in_one_go)
    client.start()
    run_until(client, "/typed-ahead")
    client.join()
    assert received[0].startswith(b"wsgiprobe: pdb in worker 1")
    assert b"(Pdb) 42\n(Pdb) " in received[0]


def test_a_silent_client_is_dropped_after_the_idle_timeout(reset_hook, worker_one, caplog):
    base = free_base_port()
    fake = FakeWorker()
    settings = pdbhook.PdbSettings(secret=SECRET, base_port=base, timeout=5, idle_timeout=1.5)
    pdbhook.gunicorn_post_worker_init(fake, settings)
    received = []

    def silent():
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(200):
            with contextlib.suppress(OSError):
                conn = socket.create_connection(("127.0.0.1", base + 1), timeout=10)
                break
            time.sleep(0.02)
        with conn:
            conn.sendall(SECRET.encode() + b"\n")
            while data := conn.recv(4096):
                received.append(data)

    client = threading.Thread(target=silent)
    started = time.monotonic()
    client.start()
    run_until(client, "/silent")
    assert 1.5 <= time.monotonic() - started < 5
    assert b"idle for 1.5s: detaching" in b"".join(received)
    assert "ended (client idle for 1.5s)" in caplog.text
    assert fake.notified >= 1  # gunicorn's heartbeat kept going meanwhile


def test_a_second_signal_during_a_session_is_ignored(reset_hook, worker_one, caplog):
    base = free_base_port()
    fake = FakeWorker()
    pdbhook.gunicorn_post_worker_init(
        fake, pdbhook.PdbSettings(secret=SECRET, base_port=base, timeout=5)
    )
    seen = []
    client = threading.Thread(
        target=pdb_client,
        args=(base + 1, ["p 6 * 7", "c"], seen, lambda: os.kill(os.getpid(), signal.SIGUSR1)),
    )
    client.start()
    run_until(client, "/twice")
    client.join()
    assert "42" in seen[0]
    assert "a session is already open" in caplog.text
    assert fake.reopened == 2  # the ignored one still reopened the logs


def test_a_rotation_marker_reopens_logs_without_a_session(tmp_path, reset_hook, caplog):
    caplog.set_level(logging.INFO, logger="wsgiprobe.pdb")
    base = free_base_port()
    fake = FakeWorker()
    pdbhook.gunicorn_post_worker_init(
        fake, pdbhook.PdbSettings(secret=SECRET, base_port=base, timeout=5)
    )
    path = tmp_path / "marker.json"
    pdbhook._rotation_marker = str(path)
    workers.write_json_atomic(
        str(path),
        {"master_pid": os.getppid(), "seq": 1, "pids": [os.getpid()], "mono": time.monotonic()},
    )
    started = time.monotonic()
    os.kill(os.getpid(), signal.SIGUSR1)
    for _ in range(3):
        pass
    assert time.monotonic() - started < 0.5
    assert fake.reopened == 1
    assert "log rotation" in caplog.text
    assert pdbhook._state.rotation_seq == 1


def test_middleware_installs_once_per_process_and_passes_through(reset_hook, monkeypatch):
    chained = []
    signal.signal(signal.SIGUSR1, lambda sig, frame: chained.append(sig))
    installs = []
    real_install = pdbhook.install
    monkeypatch.setattr(pdbhook, "install", lambda s: installs.append(s) or real_install(s))
    settings = pdbhook.PdbSettings(timeout=0.1)

    def app(environ, start_response):
        start_response("200 OK", [])
        return [environ["PATH_INFO"].encode()]

    middleware = pdbhook.PdbHookMiddleware(app, settings)
    assert signal.getsignal(signal.SIGUSR1) is not pdbhook._on_usr1  # nothing at construction
    for path in ("/a", "/b"):
        assert middleware({"PATH_INFO": path}, lambda status, headers: None) == [path.encode()]
    assert installs == [settings]
    assert signal.getsignal(signal.SIGUSR1) is pdbhook._on_usr1
    assert pdbhook._state.chain is not None  # the Python handler found there is chained

    # A forked child (a respawned worker) has another pid: it installs again.
    monkeypatch.setattr(pdbhook.os, "getpid", lambda: 1)
    middleware({"PATH_INFO": "/c"}, lambda status, headers: None)
    assert len(installs) == 2


def test_middleware_is_a_pass_through_when_off(reset_hook):
    middleware = pdbhook.PdbHookMiddleware(lambda e, s: [b"x"], None)
    assert middleware({}, None) == [b"x"]
    assert signal.getsignal(signal.SIGUSR1) is not pdbhook._on_usr1


def test_middleware_in_a_thread_waits_for_the_main_thread(reset_hook):
    middleware = pdbhook.PdbHookMiddleware(lambda e, s: [b"x"], pdbhook.PdbSettings())
    thread = threading.Thread(target=middleware, args=({}, None))
    thread.start()
    thread.join()
    assert signal.getsignal(signal.SIGUSR1) is not pdbhook._on_usr1
    middleware({}, None)
    assert signal.getsignal(signal.SIGUSR1) is pdbhook._on_usr1


def test_a_busy_port_is_logged_and_the_code_goes_on(reset_hook, worker_one, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        base = taken.getsockname()[1] - 1
        pdbhook.install(pdbhook.PdbSettings(secret=SECRET, base_port=base, timeout=5))
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(3):
            pass
    assert "cannot listen on" in caplog.text
    assert not pdbhook._state.active


def test_a_forked_child_does_not_open_pdb(reset_hook, monkeypatch):
    fake = FakeWorker()
    pdbhook.gunicorn_post_worker_init(fake, pdbhook.PdbSettings(timeout=5))
    monkeypatch.setattr(pdbhook.os, "getpid", lambda: 1)
    with contextlib.suppress(Exception):
        pdbhook._on_usr1(signal.SIGUSR1, sys._getframe())
    assert fake.reopened == 1
    assert not pdbhook._state.active


def test_a_worker_hung_in_a_blocking_read_reaches_pdb(reset_hook, worker_one):
    # gunicorn's init_signals sets siginterrupt(SIGUSR1, False): with it, the read below would
    # restart in the kernel and never run the handler. install() undoes that.
    signal.signal(signal.SIGUSR1, lambda sig, frame: None)
    signal.siginterrupt(signal.SIGUSR1, False)
    base = free_base_port()
    pdbhook.install(pdbhook.PdbSettings(secret=SECRET, base_port=base, timeout=5))
    hung, feeder = socket.socketpair()
    seen = []

    def client_then_unblock():
        pdb_client(base + 1, ["p len(waiting_for)", "c"], seen)
        feeder.sendall(b"x")

    client = threading.Thread(target=client_then_unblock)
    client.start()
    waiting_for = "a reply"
    with hung, feeder:
        assert hung.recv(1) == b"x"  # blocks, no timeout: the hang being debugged
    client.join()
    assert waiting_for  # read by pdb in this frame
    assert "(Pdb) p len(waiting_for)\n7\n" in seen[0]
