"""Remote pdb on the VM, under each app server: SIGUSR1 opens a debugger in exactly the signalled
worker, stopped in the request it was serving; no client, and the worker goes on after
pdb_timeout; the port is on loopback only; another local user without the secret is refused
and the operator still gets in; the gunicorn master's log-rotation USR1 opens none; `make pdb`
drives a session through a terminal."""

from __future__ import annotations

import json
import shlex
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from conftest import DEPLOY_VARS, PDB_TIMEOUT, WORKERS
from stack import HttpResponse, Stack, wait_for
from terminal import make_pdb

BASE_PORT = 4440  # the pdb role's pdb_base_port
LOG = "/var/log/supervisor/sample_app.log"
ENV_FILE = "/etc/sample_app/app.env"
RECORDS = "/run/sample_app-private/pdb"
SLOW = "/debug/slow"
# Runs on the VM: what `telnet 127.0.0.1 PORT` does by hand. Connects as soon as the port
# opens, sends its first line (the secret), each command after a prompt, then prints the whole
# session.
CLIENT = r"""
import json, socket, sys, time
port, first, commands = json.loads(sys.stdin.read())
deadline = time.monotonic() + 20
while True:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("the pdb port never opened")
        time.sleep(0.05)
sock.sendall(first.encode() + b"\n")
out = b""
def prompt():
    global out
    while not out.endswith(b"(Pdb) "):
        data = sock.recv(65536)
        if not data:
            return False
        out += data
    return True
for command in commands:
    if not prompt():
        break
    out += command.encode() + b"\n"
    sock.sendall(command.encode() + b"\n")
while data := sock.recv(65536):
    out += data
sys.stdout.write(out.decode("utf-8", "replace"))
"""


def worker_pids(stack: Stack) -> dict[int, int]:
    """Worker index -> pid, as the toolkit knows them (uWSGI ids, gunicorn slots)."""
    status = stack.workers_status()
    if sorted(status) != list(range(1, WORKERS + 1)):
        # An earlier test restarted the server: its new workers are listed once warmed.
        warm = stack.warm_up("before-pdb")
        assert warm.returncode == 0, warm.stdout[-3000:]
        status = stack.workers_status()
    pids = {index: entry["pid"] for index, entry in status.items()}
    assert sorted(pids) == list(range(1, WORKERS + 1)), pids
    return pids


def log_size(stack: Stack) -> int:
    return int(stack.ssh(f"stat -c %s {LOG}").stdout)


def log_since(stack: Stack, offset: int) -> str:
    return stack.ssh(f"tail -c +{offset + 1} {LOG}").stdout


def listening(stack: Stack) -> list[str]:
    """Local addresses of every TCP listener in the pdb port range (worker 1..WORKERS)."""
    out = stack.ssh("ss -ltnH").stdout
    ports = range(BASE_PORT + 1, BASE_PORT + WORKERS + 1)
    return [
        fields[3]
        for fields in (line.split() for line in out.splitlines())
        if len(fields) >= 4 and fields[3].rpartition(":")[2].isdigit()
        and int(fields[3].rpartition(":")[2]) in ports
    ]  # fmt: skip


class SlowRequests:
    """One GET /debug/slow per worker, at once: each worker is busy in one of them (a busy sync
    worker accepts nothing more), so that a signal reaches it mid-request."""

    def __init__(self, stack: Stack, seconds: float, count: int = WORKERS) -> None:
        self.pool = ThreadPoolExecutor(count)
        self.futures: list[Future[HttpResponse]] = [
            self.pool.submit(stack.get, f"{SLOW}?seconds={seconds}", 120) for _ in range(count)
        ]
        time.sleep(1.5)  # every request reached its worker and sleeps there

    def results(self, seconds: float = 60) -> dict[int, dict]:
        """pid -> the JSON answer; every request must have answered 200."""
        answers = [future.result(timeout=seconds) for future in self.futures]
        self.pool.shutdown()
        assert [a.status for a in answers] == [200] * len(answers), [a.text for a in answers]
        return {a.json()["pid"]: a.json() for a in answers}


def serves_again(stack: Stack, pid: int) -> None:
    """The worker is alive, the same process, and answers requests."""
    assert pid in worker_pids(stack).values()
    answered = SlowRequests(stack, 1).results()
    assert pid in answered, f"worker pid {pid} served none of {sorted(answered)}"


def pdb_secret(stack: Stack) -> str:
    """Where the operator reads it by hand (root only)."""
    return stack.ssh(f"sed -n 's/^WSGIPROBE_PDB_SECRET=//p' {ENV_FILE}").stdout.strip()


def remote_session(
    stack: Stack, port: int, commands: list[str], first: str | None = None, user: str = "root"
) -> str:
    """The session CLIENT sees as `user` on the VM; its first line is the secret unless given."""
    line = pdb_secret(stack) if first is None else first
    command = f"runuser -u {user} -- python3 -c {shlex.quote(CLIENT)}"
    return stack.ssh(command, stdin=json.dumps([port, line, commands])).stdout


@pytest.mark.every_release
def test_sigusr1_opens_pdb_in_the_request_the_worker_serves(deployed: Stack):
    worker = 2  # not 1: exactly the signalled worker opens the session
    pid = worker_pids(deployed)[worker]
    offset = log_size(deployed)
    slow = SlowRequests(deployed, 8)

    deployed.ssh(f"kill -USR1 {pid}")  # the manual way of the README
    session = remote_session(deployed, BASE_PORT + worker, ["p path", "p os.getpid()", "c"])

    # Stopped in the interrupted frame (the view asleep), not in the signal handler.
    assert f"pdb in worker {worker} pid {pid}" in session, session
    assert "sample_app/slow.py" in session and "-> time.sleep(seconds)" in session, session
    assert "'/debug/slow'" in session, session
    assert f"\n{pid}\n" in session, session
    answers = slow.results()
    assert answers[pid]["path"] == SLOW  # the interrupted request completed
    log = log_since(deployed, offset)
    port = BASE_PORT + worker
    assert f"pdb: worker {worker} pid {pid}: SIGUSR1, pdb listening on 127.0.0.1:{port}" in log
    assert f"pdb: worker {worker} pid {pid}: client 127.0.0.1:" in log
    assert f"session on 127.0.0.1:{port} ended (continue); the worker goes on" in log
    # No other worker opened one.
    assert log.count("pdb listening on") == 1, log
    serves_again(deployed, pid)


def test_without_a_client_the_worker_goes_on_after_the_timeout(deployed: Stack):
    worker = 3
    pid = worker_pids(deployed)[worker]
    port = BASE_PORT + worker
    offset = log_size(deployed)
    slow = SlowRequests(deployed, 3)
    signalled = time.monotonic()
    deployed.ssh(f"kill -USR1 {pid}")

    wait_for("the pdb port", lambda: listening(deployed), 5)
    record = json.loads(deployed.ssh(f"cat {RECORDS}/pdb-worker-{worker}.json").stdout)
    assert (record["worker"], record["pid"], record["port"]) == (worker, pid, port)
    assert (record["state"], record["timeout"]) == ("listening", PDB_TIMEOUT)

    answers = slow.results()
    waited = time.monotonic() - signalled
    # The sleep was interrupted 1.5 s in, then the worker waited pdb_timeout for a client.
    assert answers[pid]["elapsed"] >= PDB_TIMEOUT + 1, answers[pid]
    assert waited >= PDB_TIMEOUT, waited
    assert listening(deployed) == []  # the port is closed
    deployed.ssh(f"test ! -e {RECORDS}/pdb-worker-{worker}.json")  # and its record gone
    assert f"ended (no client within {PDB_TIMEOUT}s); the worker goes on" in log_since(
        deployed, offset
    )
    serves_again(deployed, pid)


def test_the_pdb_port_listens_on_loopback_only(deployed: Stack):
    worker = 1
    pid = worker_pids(deployed)[worker]
    port = BASE_PORT + worker
    slow = SlowRequests(deployed, 4)
    deployed.ssh(f"kill -USR1 {pid}")

    addresses = wait_for("the pdb port", lambda: listening(deployed), 5)
    assert addresses == [f"127.0.0.1:{port}"]
    # From the controller, the VM's own address refuses it.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((deployed.address, port), timeout=5).close()
    # Still listening: the refused attempt was not taken for a client. Let the worker go on.
    assert "wsgiprobe: pdb in worker 1" in remote_session(deployed, port, ["c"])
    assert slow.results()[pid]["path"] == SLOW


def test_another_local_user_is_refused_and_the_operator_still_gets_in(deployed: Stack):
    """Any local user can reach the loopback port; without the secret it gets no pdb command
    run, cannot read the secret or use pdb-attach, and does not take the operator's session."""
    worker = 2
    pid = worker_pids(deployed)[worker]
    port = BASE_PORT + worker
    intruder = "pdbintruder"
    uid_of = "p __import__('os').getuid()"
    app_uid = deployed.ssh("id -u sample_app").stdout.strip()
    deployed.ssh(f"useradd --no-create-home --shell /bin/sh {intruder}")
    try:
        # The secret's file and the attach command (which reads it) are closed to that user.
        assert deployed.ssh(f"runuser -u {intruder} -- cat {ENV_FILE}", check=False).returncode
        attach = deployed.ssh(
            f"runuser -u {intruder} -- /srv/sample_app/bin/pdb-attach --worker {worker}",
            check=False,
        )
        assert attach.returncode != 0 and "Permission denied" in attach.stderr, attach
        offset = log_size(deployed)
        slow = SlowRequests(deployed, 12)
        deployed.ssh(f"kill -USR1 {pid}")
        # A pdb command in place of the secret, and a wrong secret followed by one.
        for first in (uid_of, "not-the-secret-0123456789"):
            refused = remote_session(deployed, port, [uid_of, "c"], first=first, user=intruder)
            assert refused == "wsgiprobe: refused (wrong secret)\n", refused
        # The operator, by hand with the secret, gets the session in that very request.
        session = remote_session(deployed, port, [uid_of, "p path", "c"])
        assert f"pdb in worker {worker} pid {pid}" in session, session
        assert f"(Pdb) {uid_of}\n{app_uid}\n" in session and "'/debug/slow'" in session, session
        assert slow.results()[pid]["path"] == SLOW
        log = log_since(deployed, offset)
        assert log.count(f"pdb: worker {worker} pid {pid}: client 127.0.0.1:") == 3, log
        assert log.count("refused (wrong secret)") == 2, log
        assert "not-the-secret" not in log and pdb_secret(deployed) not in log
    finally:
        deployed.ssh(f"userdel {intruder}")
    serves_again(deployed, pid)


def test_a_sigusr1_to_the_master_opens_no_session_and_the_service_answers(deployed: Stack):
    """Log rotation sends SIGUSR1 to the gunicorn master, which forwards it to every worker:
    they reopen their logs and open no debugger. uWSGI's master prints its stats."""
    pids = worker_pids(deployed)
    master = deployed.master_pid()
    offset = log_size(deployed)
    deployed.ssh(f"kill -USR1 {master}")

    started = time.monotonic()
    while time.monotonic() - started < 3:  # a session would listen for pdb_timeout (5 s)
        assert listening(deployed) == []
        time.sleep(0.3)
    answered = SlowRequests(deployed, 1).results(seconds=PDB_TIMEOUT)
    assert set(answered) == set(pids.values())  # every worker answers, none sits in pdb
    assert worker_pids(deployed) == pids
    log = log_since(deployed, offset)
    assert "pdb listening" not in log, log
    if deployed.server == "gunicorn":
        for pid in pids.values():
            assert f"SIGUSR1 from the master (log rotation) in pid {pid}: no session" in log, log
    assert deployed.ssh("supervisorctl status sample_app").stdout.split()[1] == "RUNNING"


@pytest.mark.every_release
def test_make_pdb_drives_a_session_in_a_terminal(deployed: Stack):
    worker = 4
    pid = worker_pids(deployed)[worker]
    slow = SlowRequests(deployed, 10)
    rc, shown = make_pdb(
        f"WORKER={worker}",
        session=[("(Pdb) ", "p path"), ("'/debug/slow'", "p os.getpid()"), (f"{pid}", "c")],
    )
    assert rc == 0, shown
    assert f"SIGUSR1 sent to worker {worker} (pid {pid})" in shown, shown
    assert "sample_app/slow.py" in shown and "'/debug/slow'" in shown, shown
    assert slow.results()[pid]["path"] == SLOW
    serves_again(deployed, pid)


def test_make_pdb_wakes_an_idle_worker_with_poke(deployed: Stack):
    """Idle uWSGI workers wait in C (accept): the session opens at their next request, which
    POKE=1 sends. An idle gunicorn worker waits in Python and opens it at once."""
    worker = 1
    pid = worker_pids(deployed)[worker]
    rc, shown = make_pdb(f"WORKER={worker}", "POKE=1", session=[("(Pdb) ", "c")])
    assert rc == 0, shown
    assert f"pdb in worker {worker} pid {pid}" in shown, shown
    if deployed.server == "uwsgi":
        assert (
            f"worker {worker} (pid {pid}) is idle: the session opens at its next request" in shown
        )
        assert "poking http://127.0.0.1:80/healthz" in shown, shown
    serves_again(deployed, pid)


@pytest.mark.parametrize(
    ("extra_vars", "message"),
    [
        (
            {"pdb_request_timeout": 10, "nginx_app_read_timeout": 60},
            "pdb_request_timeout (10) must be at least app_request_timeout",
        ),
        (
            {"pdb_request_timeout": 900, "nginx_app_read_timeout": 600},
            "must exceed pdb_request_timeout",
        ),
        ({"pdb_host": "localhost"}, "pdb_host (localhost) must be an IP address"),
        ({"pdb_base_port": 70000}, "pdb_base_port must be an integer from 1 to 64000"),
    ],
    ids=["request-timeout", "nginx-timeout", "host", "base-port"],
)
def test_a_bad_pdb_value_stops_the_play_before_any_change(stack: Stack, extra_vars, message):
    result = stack.deploy("bad-pdb-" + "-".join(extra_vars), **extra_vars)
    assert result.rc != 0, f"the play accepted {extra_vars}:\n{result.tail()}"
    assert message in result.output, result.tail()
    assert result.changed == 0, result.tail()


def test_with_pdb_off_nothing_of_it_is_installed(stack: Stack):
    """Deploys with pdb off, then back on with the session's settings."""
    server = stack.server or "gunicorn"
    try:
        off = stack.deploy(
            f"pdb-off-{server}", **{**DEPLOY_VARS, "app_server": server, "pdb_enabled": False}
        )
        assert off.rc == 0, off.tail()
        assert "WSGIPROBE_PDB" not in stack.ssh(f"cat {ENV_FILE}").stdout
        for path in (
            RECORDS,
            "/srv/sample_app/bin/pdb-attach",
            "/etc/tmpfiles.d/sample_app-pdb.conf",
        ):
            stack.ssh(f"test ! -e {path}")
        # The request timeouts are app_request_timeout's again (30 s; nginx 10 s more).
        if server == "uwsgi":
            stack.ssh("grep -qx 'harakiri = 30' /etc/sample_app/uwsgi.ini")
        else:
            stack.ssh("grep -qx 'timeout = 30' /etc/sample_app/gunicorn.conf.py")
            assert (
                "post_worker_init" not in stack.ssh("cat /etc/sample_app/gunicorn.conf.py").stdout
            )
        assert (
            "read_timeout 40s;" in stack.ssh("cat /etc/nginx/sites-enabled/sample_app.conf").stdout
        )
        # A worker's SIGUSR1 is the server's own again (uWSGI: stats; gunicorn: reopen logs).
        pid = worker_pids(stack)[1]
        slow = SlowRequests(stack, 3)
        stack.ssh(f"kill -USR1 {pid}")
        time.sleep(1)
        assert listening(stack) == []
        assert slow.results()[pid]["path"] == SLOW
    finally:
        on = stack.deploy(f"pdb-on-{server}", app_server=server, **DEPLOY_VARS)
        assert on.rc == 0, on.tail()
