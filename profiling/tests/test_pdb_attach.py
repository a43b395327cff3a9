"""wsgiprobe.pdb_attach: exit codes, waiting, poking, script and bridge modes (no app server;
finding worker N: test_discovery.py)."""

import http.server
import io
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from wsgiprobe import pdb_attach

SECRET = "the-attach-tests-secret-7"


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    """pdb-attach runs with the app's env file, hence WSGIPROBE_PDB_SECRET."""
    monkeypatch.setenv("WSGIPROBE_PDB_SECRET", SECRET)


IGNORE_USR1 = "import signal, time; signal.signal(signal.SIGUSR1, signal.SIG_IGN); time.sleep(60)"


@pytest.fixture
def child():
    """A live child process (of this test) that ignores SIGUSR1."""
    proc = subprocess.Popen([sys.executable, "-c", IGNORE_USR1])
    time.sleep(0.2)  # let it install SIG_IGN before anyone signals it
    yield proc
    proc.kill()
    proc.wait()


# -- main: exit codes ----------------------------------------------------------------------------


def test_no_discovery_source_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.delenv("WSGIPROBE_UWSGI_STATS", raising=False)
    monkeypatch.delenv("WSGIPROBE_WORKERS_FILE", raising=False)
    assert pdb_attach.main(["--worker", "1"]) == 2
    assert "no uWSGI stats socket or gunicorn worker record" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--worker", "0", "--pid", "1"],
        ["--uwsgi-stats", "a", "--gunicorn-record", "b"],
        ["--pid", "1", "--base-port", "65535"],
        ["--pid", "1", "--wait", "0"],
    ],
)
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as stop:
        pdb_attach.main(argv)
    assert stop.value.code == 2


def test_without_the_secret_it_signals_nothing(child, monkeypatch, capsys):
    monkeypatch.delenv("WSGIPROBE_PDB_SECRET")
    assert pdb_attach.main(["--pid", str(child.pid)]) == 2
    assert "WSGIPROBE_PDB_SECRET is not set" in capsys.readouterr().err


def test_a_gone_pid_is_a_usage_error(capsys, dead_pid):
    assert pdb_attach.main(["--pid", str(dead_pid)]) == 2
    assert "no process" in capsys.readouterr().err


def test_the_record_defaults_to_the_workers_file_env(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WSGIPROBE_UWSGI_STATS", raising=False)
    monkeypatch.setenv("WSGIPROBE_WORKERS_FILE", str(tmp_path / "missing.json"))
    assert pdb_attach.main(["--worker", "1"]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_defaults_come_from_the_app_environment(monkeypatch):
    monkeypatch.setenv("WSGIPROBE_PDB_BASE_PORT", "5550")
    monkeypatch.setenv("WSGIPROBE_PDB_HOST", "127.0.0.2")
    args = pdb_attach.build_parser(pdb_attach._defaults()).parse_args([])
    assert (args.host, args.base_port, args.worker) == ("127.0.0.2", 5550, 1)


class Hits(http.server.BaseHTTPRequestHandler):
    count = 0

    def do_GET(self):
        type(self).count += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_port_never_opens_exit_1_after_poking(child, monkeypatch, capsys):
    monkeypatch.setattr(pdb_attach, "IDLE_AFTER", 0.2)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hits)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1] - 1
    try:
        started = time.monotonic()
        argv = ["--pid", str(child.pid), "--base-port", str(base), "--wait", "1",
                "--poke", f"http://127.0.0.1:{server.server_address[1]}/wake"]  # fmt: skip
        assert pdb_attach.main(argv) == 1
        assert 1 <= time.monotonic() - started < 3
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert f"worker 1 (pid {child.pid}) is idle: the session opens at its next request" in err
    assert f"127.0.0.1:{base + 1} did not open within 1s" in err
    assert Hits.count >= 4  # a few at a time
    count = Hits.count
    time.sleep(0.3)
    assert Hits.count <= count + 4  # and stopped (in-flight ones aside)
    assert child.poll() is None  # SIGUSR1 went to exactly that pid, which ignores it


# -- the session ---------------------------------------------------------------------------------


def fake_pdb(conn, answers, received):
    """A pdb-like peer: prompt, read a line, answer it; EOF ends it."""
    with conn:
        conn.sendall(b"> here\n(Pdb) ")
        reader = conn.makefile("rb")
        for line in reader:
            received.append(line)
            if line.strip() == b"c":
                return
            conn.sendall(answers.get(line.strip(), b"?") + b"\n(Pdb) ")
        received.append(b"<EOF>")


def test_script_waits_for_each_prompt_and_prints_the_transcript():
    ours, theirs = socket.socketpair()
    received = []
    peer = threading.Thread(target=fake_pdb, args=(theirs, {b"p path": b"'/x'"}, received))
    peer.start()
    out = io.BytesIO()
    commands = pdb_attach.script_commands("# look\np path\n\nc\n")
    assert commands == ["p path", "c"]
    assert pdb_attach.run_script(ours, commands, out, timeout=5) == 0
    peer.join()
    assert out.getvalue() == b"> here\n(Pdb) p path\n'/x'\n(Pdb) c\n"
    assert received == [b"p path\n", b"c\n"]


def test_script_takes_a_prompt_read_with_the_banner():
    ours, theirs = socket.socketpair()
    received = []
    peer = threading.Thread(target=fake_pdb, args=(theirs, {b"p 1": b"1"}, received))
    peer.start()
    banner = ours.recv(100)  # all of "> here\n(Pdb) ": authenticate read the prompt already
    out = io.BytesIO()
    assert pdb_attach.run_script(ours, ["p 1", "c"], out, timeout=5, received=banner) == 0
    peer.join()
    assert out.getvalue() == b"> here\n(Pdb) p 1\n1\n(Pdb) c\n"


def test_script_without_continue_detaches_with_eof():
    ours, theirs = socket.socketpair()
    received = []
    peer = threading.Thread(target=fake_pdb, args=(theirs, {}, received))
    peer.start()
    assert pdb_attach.run_script(ours, ["p 1"], io.BytesIO(), timeout=5) == 0
    peer.join()
    assert received == [b"p 1\n", b"<EOF>"]


def test_script_gives_up_without_a_prompt():
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.sendall(b"no prompt here")
        assert pdb_attach.run_script(ours, ["c"], io.BytesIO(), timeout=0.2) == 3


def test_bridge_copies_both_ways_until_the_session_closes():
    ours, theirs = socket.socketpair()
    received = []
    peer = threading.Thread(target=fake_pdb, args=(theirs, {b"p 1": b"1"}, received))
    peer.start()
    read_end, write_end = os.pipe()
    os.write(write_end, b"p 1\nc\n")
    os.close(write_end)
    out = io.BytesIO()
    try:
        assert pdb_attach.bridge(ours, read_end, out) == 0
    finally:
        os.close(read_end)
    peer.join()
    assert received == [b"p 1\n", b"c\n"]
    assert out.getvalue() == b"> here\n(Pdb) 1\n(Pdb) "


def test_it_sends_the_secret_first_and_passes_the_banner_on():
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.sendall(b"wsgiprobe: pdb in worker 1 pid 5, stopped\n> here\n")
        assert pdb_attach.authenticate(ours, SECRET, timeout=5) == (
            b"wsgiprobe: pdb in worker 1 pid 5, stopped\n> here\n"
        )
        assert theirs.recv(100) == SECRET.encode() + b"\n"
    ours.close()


def test_a_refusal_is_reported_and_ends_it(capsys):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"wsgiprobe: refused (wrong secret)\n")
        theirs.shutdown(socket.SHUT_WR)
        assert pdb_attach.authenticate(ours, "not-the-right-one", timeout=5) is None
    assert "pdb_attach: wsgiprobe: refused (wrong secret)" in capsys.readouterr().err
