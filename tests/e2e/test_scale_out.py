"""Scale out on three VMs (configs/lab): lb1 balances across app1 and app2 and holds the Redis
they share; the firewall admits only what that topology needs; locust workers run on app1 and
app2. Each test runs under both app servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pebble
from conftest import SERVERS
from lab import (
    NAME as LAB_NAME,
)
from lab import (
    SECRETS,
    WORKERS,
    Lab,
    changed_by_host,
    connect,
    connect_from,
    inventory_without,
    lab_command,
    oracle_file,
    vm,
)
from load import REPORT_LINE, RUN, BackgroundLoad, env
from stack import (
    FIGURES,
    HEADER_LINES,
    ROOT,
    TLS_DIR,
    long_headers,
    many_headers,
    require_booted,
)
from terminal import make_pdb, make_profiler

APP_PORT = 8000  # app_listen_port
STREAM_PORT = 8001  # app_stream_listen_port
REDIS_PORT = 6379
FAIL_TIMEOUT = 5  # nginx_upstream_fail_timeout: how long the lb leaves a failed server out
DOWN_SECONDS = 15  # how long app1's app server stays stopped under load
# Bounds of the failover under 6 users: a request in flight on app1 when it stops may fail
# (a POST is not retried once sent); each one after it goes to app2.
FAILED_AT_STOP = 6
ACCESS_LOG = "/var/log/nginx/sample_app.access.log"


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    require_booted(lab_command("up", "--count", "3"), "the scale-out tests")
    yield Lab(lb=vm("lb1"), app1=vm("app1"), app2=vm("app2"))
    if os.environ.get("KEEP_VM") == "1":
        print(f"\nKEEP_VM=1: the lab stays up (make vm-destroy N=3 LAB={LAB_NAME})")
    else:
        lab_command("destroy")


@pytest.fixture(scope="session", params=SERVERS)
def lab_deployed(request: pytest.FixtureRequest, lab: Lab) -> Lab:
    """The lab deployed with the parametrised app server (from scratch for the first)."""
    server = request.param
    result = lab.deploy(f"lab-deploy-{server}", app_server=server)
    assert result.rc == 0, f"lab deploy with {server} failed:\n{result.tail()}"
    return lab


def access_log_size(lab: Lab) -> int:
    return int(lab.lb.ssh(f"wc -l < {ACCESS_LOG}").stdout)


def log_since(lab: Lab, line: int) -> list[str]:
    """The lines the lb logged after that line."""
    return lab.lb.ssh(f"tail -n +{line + 1} {ACCESS_LOG}").stdout.splitlines()


def upstreams(entries: list[str]) -> list[list[str]]:
    """For each request of those log lines: the app servers it tried, in order."""
    return [
        entry.split(" ua=", 1)[1].strip().replace(" : ", ", ").split(", ")
        for entry in entries
        if " ua=" in entry and not entry.rstrip().endswith("ua=-")
    ]


def test_a_second_deploy_changes_nothing_on_any_host(lab_deployed: Lab):
    served = lab_deployed.lb.served_certificate()
    again = lab_deployed.deploy(f"lab-again-{lab_deployed.lb.server}")
    assert again.rc == 0, again.tail()
    assert changed_by_host(again) == {"lb1": 0, "app1": 0, "app2": 0}, again.tail()
    # No certificate re-issued either.
    assert lab_deployed.lb.served_certificate()["serialNumber"] == served["serialNumber"]


def test_tls_ends_at_the_lb_which_alone_holds_the_key(lab_deployed: Lab):
    lab = lab_deployed
    # Verified against the lab config's own CA (stack.py trusts nothing else), for the lb's
    # address.
    names = lab.lb.served_certificate()["subjectAltName"]
    assert ("IP Address", lab.lb.address) in names, names
    assert lab.lb.installed_key_mode() == ["600", "root"]
    for app in lab.apps:
        assert app.ssh(f"ls {TLS_DIR}", check=False).returncode != 0, app.name


def test_requests_through_the_lb_reach_both_app_hosts(lab_deployed: Lab):
    lab = lab_deployed
    answered = lab.hosts_answering(40)
    assert set(answered) == {lab.app1.name, lab.app2.name}, answered
    # Static files too: the lb has no release of its own and passes them on.
    style = lab.lb.get("/static/style.css")
    assert style.status == 200 and b"{" in style.body


def test_a_client_s_large_headers_never_count_against_an_app_host(lab_deployed: Lab):
    """Headers the lb's nginx passes reach an app server and are answered; larger ones get the
    lb's own 400. No app host fails one (a 502 would be retried on the other, and counted
    against the first by max_fails)."""
    lab = lab_deployed
    line = access_log_size(lab)
    for _ in range(10):
        assert lab.lb.request("GET", "/healthz", headers=many_headers()).status == 200
        assert (
            lab.lb.request("GET", "/healthz", headers=long_headers(HEADER_LINES + 1)).status == 400
        )
    tried = upstreams(log_since(lab, line))
    assert len(tried) == 10 and all(len(servers) == 1 for servers in tried), tried
    answered = lab.hosts_answering(20)
    assert set(answered) == {lab.app1.name, lab.app2.name}, answered


def test_the_lb_leaves_out_a_stopped_app_host_and_takes_it_back(lab_deployed: Lab):
    lab = lab_deployed
    app1 = f"{lab.app1.address}:{APP_PORT}"
    args = [
        *("--host", lab.lb.base_url, "--ca-file", str(lab.lb.ca_file)),
        *("--oracle-secret-file", str(oracle_file())),
    ]
    with BackgroundLoad(f"lab: app1 stopped {DOWN_SECONDS} s, {lab.lb.server}", args=args) as load:
        mark = access_log_size(lab)
        lab.app1.ssh("supervisorctl stop sample_app")
        # supervisorctl returns once the server has exited: its last responses are logged.
        stopped = access_log_size(lab)
        time.sleep(DOWN_SECONDS)
        logged = log_since(lab, mark)
        while_stopping = upstreams(logged[: stopped - mark])
        after_stop = upstreams(logged[stopped - mark :])
        mark += len(logged)
        lab.app1.ssh("supervisorctl start sample_app")
        lab.app1.wait_until_running()
        time.sleep(FAIL_TIMEOUT + 5)
        back = upstreams(log_since(lab, mark))
    result = load.result
    assert result is not None
    down = while_stopping + after_stop
    served_while_stopping = [tried for tried in while_stopping if tried[-1] == app1]
    served_after_stop = [tried for tried in after_stop if tried[-1] == app1]
    retried = [tried for tried in down if app1 in tried[:-1]]
    returned = sum(1 for tried in back if tried[-1] == app1)
    FIGURES.append(
        f"lb failover, {lab.lb.server}: app1 stopped {DOWN_SECONDS} s under load: {len(down)}"
        f" requests, {len(served_while_stopping)} finished on app1 while it stopped and"
        f" {len(served_after_stop)} after, {len(retried)} tried"
        f" app1 and went on to app2; {returned} of {len(back)} on app1 in the {FAIL_TIMEOUT + 5} s"
        f" after its start; {result.failures} of {result.requests} failed in all"
    )
    # Once its server has exited, every request goes to app2. (While it stops, app1 finishes
    # what it holds: the 6 users' requests and those sent during the ssh round trip, so those
    # are counted, not bounded.)
    assert not served_after_stop, served_after_stop
    assert sum(1 for tried in after_stop if tried[-1] != app1) >= 30, after_stop[-10:]
    # While it is down the lb tries app1 again once per fail_timeout (zone: its workers share
    # what they learn), retrying that request on app2; besides, the requests sent to app1 at
    # the stop, before one of them failed, are retried too.
    assert len(retried) <= FAILED_AT_STOP + DOWN_SECONDS // FAIL_TIMEOUT + 1, retried
    # Back within fail_timeout: app1 serves again.
    assert returned >= 5, back[-10:]
    assert result.failures <= FAILED_AT_STOP, result.failure_messages()
    assert result.requests >= 100, result.line()


def test_streams_through_the_lb_go_to_each_app_host_s_stream_pool(lab_deployed: Lab):
    lab = lab_deployed
    start = access_log_size(lab)
    for _ in range(4):
        _, events, _ = lab.lb.stream_events("/events?max_seconds=2")
        assert events
    streams = [entry for entry in log_since(lab, start) if "GET /events" in entry]
    tried = {server for servers in upstreams(streams) for server in servers}
    assert tried == {f"{app.address}:{STREAM_PORT}" for app in lab.apps}, streams


def test_a_captcha_made_via_app1_verifies_via_app2(lab_deployed: Lab):
    lab = lab_deployed
    oracle = {"X-Captcha-Oracle": oracle_file().read_text().strip()}
    json_headers = {"Content-Type": "application/json", **oracle}
    # Each through the app host's own nginx, so that the other one has no part in it.
    created = lab.app1.loopback("POST", "/api/captchas", json_headers, "{}")
    assert created.status == 201, created.text
    captcha = created.json()
    answer = json.dumps({"answer": captcha["answer"]})
    verified = lab.app2.loopback("POST", captcha["verify_url"], json_headers, answer)
    assert (verified.status, verified.json()) == (200, {"valid": True})


def test_the_firewall_admits_only_what_the_topology_needs(lab_deployed: Lab):
    lab = lab_deployed
    # From the host side of the VM network, a host that is not in the topology.
    for app in lab.apps:
        assert connect(app.address, APP_PORT) == "refused", app.name
        assert connect(app.address, 80) == "refused", app.name  # its nginx is on loopback
    assert connect(lab.lb.address, REDIS_PORT) == "refused"
    assert connect(lab.lb.address, 80) == "open"  # its redirect to HTTPS
    assert connect(lab.lb.address, 443) == "open"
    for app in lab.apps:
        assert connect(app.address, 443) != "open", app.name  # TLS ends at the lb
    # Inside it: the lb reaches the app servers, the app hosts reach Redis, and no more.
    assert connect_from(lab.lb, lab.app1.address, APP_PORT) == "open"
    assert connect_from(lab.app1, lab.lb.address, REDIS_PORT) == "open"
    assert connect_from(lab.app2, lab.app1.address, APP_PORT) == "refused"
    for app in lab.apps:
        assert connect(app.address, STREAM_PORT) == "refused", app.name
        assert connect_from(lab.lb, app.address, STREAM_PORT) == "open", app.name
    assert connect_from(lab.app2, lab.app1.address, STREAM_PORT) == "refused"
    # Redis still asks them for its password.
    ping = lab.app1.ssh(
        f"python3 -c \"import socket; s = socket.create_connection(('{lab.lb.address}', "
        f"{REDIS_PORT})); s.sendall(b'PING\\r\\n'); print(s.recv(100).decode())\""
    ).stdout
    assert "NOAUTH" in ping, ping


def test_the_debug_surfaces_stay_on_each_app_host(lab_deployed: Lab):
    lab = lab_deployed
    assert lab.lb.loopback("GET", "/lazyinit?status").status == 404
    assert lab.lb.loopback("GET", "/_profiler/").status == 404
    # make warmup warms every worker of every app host.
    warm = lab.lb.warm_up(f"lab-{lab.lb.server}")
    assert warm.returncode == 0, warm.stdout[-3000:]
    for app in lab.apps:
        workers = app.workers_status()
        assert sorted(workers) == list(range(1, WORKERS + 1)), workers
        assert all(entry["warm"] for entry in workers.values()), workers
    # The profiler of app2, through make profiler's tunnel to that host, with its own password.
    password = (SECRETS / "app2" / "profiling_password").read_text().strip()
    page, _ = make_profiler("ENV=lab", "HOST=app2", password=password)
    assert "All profiles" in page


def test_make_pdb_opens_a_session_in_a_worker_of_the_named_app_host(lab_deployed: Lab):
    rc, shown = make_pdb(
        "ENV=lab", "HOST=app2", "WORKER=2", "POKE=1",
        session=[("(Pdb) ", "p __import__('socket').gethostname()"), ("'", "c")],
    )  # fmt: skip
    assert rc == 0, shown
    assert f"'{lab_deployed.app2.name}'" in shown, shown
    assert "pdb in worker 2" in shown, shown


def test_a_distributed_run_with_workers_on_two_vms_reports_the_combined_load(lab_deployed: Lab):
    proc = subprocess.run(
        [
            sys.executable, str(RUN), "--loadgen", "lab", "--users", "4", "--spawn-rate", "4",
            "--duration", "20s", "--tags", "smoke",
        ],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    match = REPORT_LINE.search(proc.stdout)
    assert match, proc.stdout[-3000:]
    summary = json.loads((Path(match.group(2)) / "summary.json").read_text())
    counts = summary["loadgen"]["worker_counts"]
    # One worker on each loadgen VM, each with load of its own, adding up on the master.
    assert summary["workers"] == 2, summary
    assert sorted(count["where"] for count in counts) == ["app1", "app2"], counts
    assert all(count["requests"] > 0 for count in counts), counts
    assert sum(count["requests"] for count in counts) == summary["requests"] > 0, summary
    FIGURES.append(
        f"distributed locust, {lab_deployed.lb.server}: "
        + " + ".join(f"{c['where']} {c['requests']}" for c in counts)
        + f" = {summary['requests']} requests on the master, {summary['failures']} failed"
    )


def test_an_app_host_added_to_the_inventory_serves_after_one_deploy(
    lab_deployed: Lab, tmp_path: Path
):
    lab = lab_deployed
    server = lab.lb.server
    without_app2 = inventory_without("app2", tmp_path / "lab")
    before = lab.deploy(f"lab-without-app2-{server}", inventory=without_app2)
    assert before.rc == 0, before.tail()
    assert set(lab.hosts_answering(10)) == {lab.app1.name}
    assert connect_from(lab.app2, lab.lb.address, REDIS_PORT) == "refused"
    # The same deploy on the whole inventory: the store's firewall must admit app2 before
    # app2's warm-up reaches Redis, and the lb must balance to it.
    added = lab.deploy(f"lab-app2-added-{server}")
    assert added.rc == 0, added.tail()
    answered = lab.hosts_answering(40)
    assert set(answered) == {lab.app1.name, lab.app2.name}, answered


def test_the_lb_alone_gets_the_certificate_from_an_acme_server(lab: Lab):
    """Once, whichever server the lab runs (the certificate is the lb's nginx's): Pebble on the
    lb, the lab deployed in acme mode, then back to the lab's local CA."""
    if lab.lb.server is None:
        deployed = lab.deploy("lab-deploy-for-acme", app_server=SERVERS[0])
        assert deployed.rc == 0, deployed.tail()
    acme = pebble.start(lab.lb, "lab.acme.test", validity=3600)
    try:
        result = lab.deploy(f"lab-acme-{lab.lb.server}", **acme.deploy_vars(interval=3600))
        assert result.rc == 0, result.tail()
        status, serial = acme.served()
        assert status == 200
        assert serial == lab.lb.installed_serial()
        # The lb runs the ACME client and its renewal; the app hosts hold neither.
        timer = lab.lb.ssh("systemctl is-active sample_app-tls-renew.timer", check=False)
        assert timer.stdout.strip() == "active"
        for app in lab.apps:
            assert app.ssh(f"ls /opt/certbot {TLS_DIR}", check=False).returncode != 0
    finally:
        pebble.stop(lab.lb)
        restored = lab.deploy(f"lab-after-acme-{lab.lb.server}")
        assert restored.rc == 0, restored.tail()
