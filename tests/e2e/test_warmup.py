"""The warm-up under each app server: every worker warm after a deploy, a respawned worker
warmed by the next warm-up, a failing init named."""

from __future__ import annotations

import signal

import pytest

from conftest import DEPLOY_VARS, EXTRA_INIT_SECONDS, WORKERS
from stack import Stack


@pytest.mark.every_release
def test_every_worker_is_warm_after_the_deploy(deployed: Stack):
    # Deployed again here: earlier tests restart the server, which leaves its workers cold.
    result = deployed.deploy(f"redeploy-{deployed.server}-warm", app_server=deployed.server,
                             **DEPLOY_VARS)  # fmt: skip
    assert result.rc == 0, result.tail()
    workers = deployed.workers_status()
    assert sorted(workers) == list(range(1, WORKERS + 1))
    assert {w["pid"] for w in workers.values()} == deployed.worker_pids()
    assert all(w["warm"] for w in workers.values()), workers
    # Each did the app's init itself, the extra CPU seconds included.
    assert all(w["init_seconds"] >= EXTRA_INIT_SECONDS for w in workers.values()), workers


def test_lazyinit_is_refused_to_other_clients(deployed: Stack):
    assert deployed.get("/lazyinit").status == 403
    assert deployed.get("/lazyinit?status").status == 403
    assert deployed.get("/%6cazyinit").status == 403  # nginx matches the decoded path


def test_the_next_warm_up_warms_a_respawned_worker(deployed: Stack):
    before = deployed.worker_pids()
    victim = deployed.workers_status()[2]["pid"]
    deployed.ssh(f"kill -{signal.SIGKILL.value} {victim}")
    after = deployed.wait_for_respawn(before, WORKERS)
    (new_pid,) = after - before

    result = deployed.warm_up("after-kill")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    workers = deployed.workers_status()
    assert all(w["warm"] for w in workers.values()), workers
    assert new_pid in {w["pid"] for w in workers.values()}
    # The table names every worker, the new one included.
    assert str(new_pid) in result.stdout


@pytest.mark.every_release
def test_a_failing_init_fails_the_warm_up_and_names_the_worker(deployed: Stack):
    # The store is part of the init: with Redis down, a new worker cannot finish its init.
    before = deployed.worker_pids()
    victim = deployed.workers_status()[1]["pid"]
    deployed.ssh(f"systemctl stop {deployed.store_service()}")
    try:
        deployed.ssh(f"kill -{signal.SIGKILL.value} {victim}")
        (new_pid,) = deployed.wait_for_respawn(before, WORKERS) - before
        result = deployed.warm_up("init-fails")
        assert result.returncode != 0
        output = result.stdout + result.stderr
        assert str(new_pid) in output
        assert "init_failed" in output or "cold" in output
    finally:
        deployed.ssh(f"systemctl start {deployed.store_service()}")
    result = deployed.warm_up("store-back")
    assert result.returncode == 0, result.stdout[-3000:]
    assert all(w["warm"] for w in deployed.workers_status().values())


@pytest.fixture(autouse=True)
def _store_is_up(deployed: Stack):
    yield
    deployed.ssh(f"systemctl start {deployed.store_service()}")
