"""The faults a real service meets, during a locust load, under each app server: a worker
killed with SIGKILL, the app server's master killed, Redis stopped. Each costs at most the
failed requests bounded below, and the service is whole again afterwards without a hand on it
(no restart, no warm-up run).

Bounds, for the flow load of 6 users (about 16 requests/s here; measured on this machine):
- a worker killed: only what it had in flight fails, one request per sync worker: at most 2
  (measured 0 under both servers);
- the master killed: what arrives while supervisor restarts the program and the workers load:
  at most 30, about 2 s of the load (measured 0 under uWSGI, 5 of 181 under gunicorn);
- Redis stopped: the store's requests fail with 503 while it is down (about 20 in 3 s), every
  failure a 503, and none after it is back.
"""

from __future__ import annotations

import signal
import time

import pytest

from conftest import WORKERS
from load import BackgroundLoad
from releases import serving_release
from stack import Stack, wait_for

WORKER_KILL_MAX_FAILED = 2
MASTER_KILL_MAX_FAILED = 30
RECOVERY_SECONDS = 30
# The load must see the outage and the recovery.
LOAD_SECONDS_AFTER = 5


def all_warm_on_current(stack: Stack) -> bool:
    """Every worker warm on the serving release, each pid a child of the master, the workers
    indexed 1..N (a respawned worker takes the index of the one it replaces)."""
    status = stack.workers_status()
    release = serving_release(stack)
    live = stack.worker_pids()
    return (
        sorted(status) == list(range(1, WORKERS + 1))
        and {entry["pid"] for entry in status.values()} == live
        and all(entry["warm"] and entry["release"] == release for entry in status.values())
    )


def warm_up(stack: Stack, label: str) -> None:
    result = stack.warm_up(f"{stack.server}-{label}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert all_warm_on_current(stack)


def test_a_killed_worker_is_respawned_and_warm_again(deployed: Stack):
    # Every worker warm first: an earlier test may have restarted the server.
    warm_up(deployed, "before-worker-kill")
    before = deployed.worker_pids()
    victim = deployed.workers_status()[2]["pid"]
    with BackgroundLoad(f"{deployed.server}: SIGKILL a worker") as load:
        deployed.ssh(f"kill -{signal.SIGKILL.value} {victim}")
        deployed.wait_for_respawn(before, WORKERS)
        # Warm at once: the new worker ran the init as it loaded, before its first request.
        wait_for("warm again", lambda: all_warm_on_current(deployed), RECOVERY_SECONDS, 0.5)
        time.sleep(LOAD_SECONDS_AFTER)
    sent = load.stop()
    assert sent.requests > 0
    assert sent.failures <= WORKER_KILL_MAX_FAILED, sent.failure_messages()
    assert victim not in deployed.worker_pids()


def test_a_killed_master_is_restarted_by_supervisor(deployed: Stack):
    master = deployed.master_pid()
    old_workers = deployed.worker_pids()
    with BackgroundLoad(f"{deployed.server}: SIGKILL the master") as load:
        deployed.ssh(f"kill -{signal.SIGKILL.value} {master}")
        wait_for(
            "restarted by supervisor",
            lambda: (
                deployed.program_status().count(" RUNNING ") and deployed.master_pid() != master
            ),
            RECOVERY_SECONDS,
            0.5,
        )
        wait_for("healthy", lambda: deployed.get("/healthz").status == 200, RECOVERY_SECONDS, 0.5)
        time.sleep(LOAD_SECONDS_AFTER)
    sent = load.stop()
    assert sent.failures <= MASTER_KILL_MAX_FAILED, sent.failure_messages()
    # No worker of the killed master lives on (it would hold an init slot or a pdb port): the
    # kernel sends them SIGTERM (wsgiprobe.workers.die_with_parent), they finish and exit.
    pids = ",".join(map(str, old_workers))
    wait_for(
        "without the old workers",
        lambda: not deployed.ssh(f"ps -o pid= -p {pids} || true").stdout.split(),
        RECOVERY_SECONDS,
        0.5,
    )
    # The restart started every worker at once: those that found the init slot taken are
    # warmed by the next warm-up, as after any restart.
    warm_up(deployed, "after-master-kill")


@pytest.mark.every_release
def test_the_store_stopped_answers_503_and_recovers_without_a_restart(deployed: Stack):
    master, workers = deployed.master_pid(), deployed.worker_pids()
    with BackgroundLoad(f"{deployed.server}: store stopped") as outage:
        deployed.ssh(f"systemctl stop {deployed.store_service()}")
        health = deployed.get("/healthz")
        assert health.status == 503, health.text
        assert health.json()["store"] == "unavailable"
        created = deployed.post_json("/api/captchas", {})
        assert created.status == 503, created.text
        assert created.headers["Content-Type"].startswith("application/json")
        assert created.json()["error"]
        time.sleep(3)
        deployed.ssh(f"systemctl start {deployed.store_service()}")
        wait_for("healthy", lambda: deployed.get("/healthz").status == 200, RECOVERY_SECONDS, 0.5)
    during = outage.stop()
    assert during.failures > 0, "the load never met the outage"
    # Every failure was the store's 503, none a 5xx of the server or a broken connection.
    assert all("got 503" in row["Error"] for row in during.failure_rows()), (
        during.failure_messages()
    )
    # Back without a restart of the app: same master, same workers.
    assert deployed.master_pid() == master
    assert deployed.worker_pids() == workers
    with BackgroundLoad(f"{deployed.server}: store back", warm_seconds=8) as after:
        pass
    back = after.stop()
    assert back.requests > 0
    assert back.failures == 0, back.failure_messages()


@pytest.fixture(autouse=True)
def _store_is_up(deployed: Stack):
    yield
    deployed.ssh(f"systemctl start {deployed.store_service()}")
