"""`make deploy` with each app server: it serves, is supervised, and re-runs change nothing."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from conftest import DEPLOY_VARS, WORKERS
from stack import ROOT, Stack

OTHER = {"uwsgi": "gunicorn", "gunicorn": "uwsgi"}
ACCESS_LOG = "/var/log/nginx/sample_app.access.log"
PROGRAM_LOG = "/var/log/supervisor/sample_app.log"
DAEMON_LOG = "/var/log/supervisor/supervisord.log"
# Logs hold clients' addresses and paths: readable by these groups, not by others.
LOG_GROUPS = {"adm", "sample_app"}


@pytest.mark.every_release
def test_page_is_served_through_nginx(deployed: Stack):
    response = deployed.get("/")
    assert response.status == 200
    assert response.headers["Server"].startswith("nginx")
    assert "<h1>Captcha service</h1>" in response.text


def test_static_files_are_served_by_nginx(deployed: Stack):
    response = deployed.get("/static/style.css")
    assert response.status == 200
    # The `expires` of the nginx location, which the app itself does not send.
    assert response.headers["Cache-Control"] == "max-age=3600"
    assert b"font-family" in response.body


@pytest.mark.every_release
def test_supervisor_runs_the_program(deployed: Stack):
    assert " RUNNING " in deployed.program_status()


@pytest.mark.every_release
def test_worker_count_follows_the_variable(deployed: Stack):
    assert len(deployed.worker_pids()) == WORKERS


@pytest.mark.every_release
def test_exactly_one_app_server_runs(deployed: Stack):
    assert deployed.discovery()["server"] == deployed.server
    assert deployed.server_pids(deployed.server)
    assert deployed.server_pids(OTHER[deployed.server]) == []


@pytest.mark.every_release
def test_second_deploy_changes_nothing(deployed: Stack):
    served = deployed.served_certificate()
    result = deployed.deploy(
        f"redeploy-{deployed.server}", app_server=deployed.server, **DEPLOY_VARS
    )
    assert result.rc == 0, result.tail()
    assert result.changed == 0, result.tail()
    # Nor is the certificate issued again: nginx serves the same one.
    again = deployed.served_certificate()
    assert again["serialNumber"] == served["serialNumber"], (served, again)


@pytest.mark.every_release
def test_no_log_the_stack_writes_is_readable_by_others(deployed: Stack):
    store = deployed.store_service().removesuffix("-server")
    files = _log_files(deployed, "/var/log/nginx", "/var/log/supervisor", f"/var/log/{store}")
    written = {ACCESS_LOG, "/var/log/nginx/error.log", PROGRAM_LOG, DAEMON_LOG}
    assert written | {f"/var/log/{store}/{store}-server.log"} <= files.keys(), files
    _assert_private(files)


def test_the_access_log_logrotate_creates_is_private_and_written(deployed: Stack):
    deployed.ssh("logrotate -f /etc/logrotate.d/nginx")
    # nginx reopens its logs on the USR1 of logrotate's postrotate, in its own time.
    marker = uuid.uuid4().hex
    deadline = time.monotonic() + 10
    while deployed.ssh(f"grep -c {marker} {ACCESS_LOG}", check=False).returncode != 0:
        assert time.monotonic() < deadline, f"nginx does not log to the new {ACCESS_LOG}"
        assert deployed.get(f"/?{marker}").status == 200
        time.sleep(0.5)
    _assert_private(_log_files(deployed, ACCESS_LOG))


def test_the_logs_supervisord_creates_again_are_private(deployed: Stack):
    """supervisord opens a new file when it rotates a log by size, as when it reopens its logs
    (SIGUSR2): that file is as private as the first."""
    logs = (PROGRAM_LOG, DAEMON_LOG)
    deployed.ssh(" && ".join(f"mv {log} {log}.moved" for log in logs))
    try:
        deployed.ssh("kill -USR2 $(cat /run/supervisord.pid)")
        exist = " && ".join(f"test -f {log}" for log in logs)
        deadline = time.monotonic() + 10
        while deployed.ssh(exist, check=False).returncode != 0:
            assert time.monotonic() < deadline, "supervisord did not create its logs again"
            time.sleep(0.5)
        _assert_private(_log_files(deployed, *logs))
    finally:
        deployed.ssh("rm -f " + " ".join(f"{log}.moved" for log in logs))


def test_app_serves_again_after_supervisor_restarts(deployed: Stack):
    deployed.ssh("systemctl restart supervisor")
    deployed.wait_until_serving("/")
    deployed.wait_until_running()


def test_stopping_the_program_stops_all_its_processes(deployed: Stack):
    assert len(deployed.server_pids(deployed.server)) == WORKERS + 1
    deployed.ssh("supervisorctl stop sample_app")
    try:
        assert deployed.server_pids(deployed.server) == []
    finally:
        deployed.ssh("supervisorctl start sample_app")
    deployed.wait_until_serving("/")


def _log_files(stack: Stack, *paths: str) -> dict[str, tuple[str, str]]:
    """The files at or under `paths` on the VM: (octal mode, group) by path."""
    out = stack.ssh(f"find {' '.join(paths)} -type f -printf '%m %g %p\\n'").stdout
    return {
        path: (mode, group)
        for mode, group, path in (line.split(" ", 2) for line in out.splitlines())
    }


def _assert_private(files: dict[str, tuple[str, str]]) -> None:
    assert files
    loose = {
        path: (mode, group)
        for path, (mode, group) in files.items()
        if int(mode, 8) & 0o007 or group not in LOG_GROUPS
    }
    assert not loose, f"readable by others, or not a log group's: {loose}"


def test_make_ssh_runs_the_command_on_the_vm_as_written(deployed: Stack):
    """$, quotes, ; and | reach the VM's shell untouched: neither make nor the host's shell
    expands them ($SSH_CONNECTION is set only in the VM's ssh session)."""
    command = """echo "[$SSH_CONNECTION]" 'it'"'"'s' $((6*7)) | tr a-z A-Z; echo $$ >/dev/null"""
    proc = subprocess.run(
        ["make", "-s", "ssh", f"CMD={command}"], cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = proc.stdout.strip()
    assert line.startswith("[") and f" {deployed.address} 22]" in line, line
    assert line.endswith("] IT'S 42"), line
