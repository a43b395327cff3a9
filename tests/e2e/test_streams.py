"""Streams (/events) never cost a request worker: nginx passes them to the stream pool (gevent
workers, a supervisor program of their own), a client holds at most nginx_client_streams of
them (429 beyond), and a stream pool process at most app_streams_per_worker (503 with
Retry-After beyond), under each app server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from conftest import WORKERS
from stack import ROOT, Stack

# The roles' defaults (roles/app/defaults, roles/nginx/defaults).
CLIENT_STREAMS = 10
STREAMS_PER_WORKER = 200
STREAM_WORKERS = 1
HOLDER = ROOT / "loadtests" / "streams.py"


@contextmanager
def held_streams(deployed: Stack, count: int, seconds: int = 30) -> Iterator[list[int]]:
    """count /events streams from this host, each read to its first event and held open
    while the block runs; yields their statuses."""
    connections, statuses = [], []
    try:
        for _ in range(count):
            connection = deployed.https_connection()
            connections.append(connection)
            connection.request("GET", f"/events?max_seconds={seconds}")
            response = connection.getresponse()
            statuses.append(response.status)
            if response.status == 200:
                assert response.readline().startswith(b"retry:")
        yield statuses
    finally:
        for connection in connections:
            connection.close()


@pytest.mark.every_release
def test_streams_leave_every_request_worker_free(deployed: Stack):
    """Two streams used to hold both sync workers: /healthz then waited 20 s and timed out.
    Now many more than the request workers stream while requests are answered at once."""
    with held_streams(deployed, CLIENT_STREAMS) as statuses:
        assert statuses == [200] * CLIENT_STREAMS
        for _ in range(2 * WORKERS):
            started = time.monotonic()
            assert deployed.get("/healthz", timeout=5).status == 200
            assert time.monotonic() - started < 1
        assert deployed.post_json("/api/captchas", {}).status == 201
        # Every request worker still answers (the warm-up's status), and the stream pool's
        # processes are not among them.
        assert len(deployed.workers_status()) == WORKERS


def test_a_client_holds_no_more_than_its_share_of_streams(deployed: Stack):
    with held_streams(deployed, CLIENT_STREAMS + 2) as statuses:
        assert statuses[:CLIENT_STREAMS] == [200] * CLIENT_STREAMS
        assert statuses[CLIENT_STREAMS:] == [429, 429]
        refused = deployed.request("GET", "/events", headers={"Accept": "application/json"})
        assert refused.status == 429
        assert refused.json()["error"] == "too_many_connections"
        # Requests other than streams are not part of this share.
        assert deployed.get("/healthz").status == 200
    # Once closed, the streams are the client's again: nginx learns of a close when it next
    # writes to that client (an event a second).
    deadline = time.monotonic() + 5
    while True:
        with held_streams(deployed, 1, seconds=1) as statuses:
            if statuses == [200] or time.monotonic() > deadline:
                break
        time.sleep(0.5)
    assert statuses == [200]


def test_the_stream_pool_refuses_beyond_its_bound_with_503_and_retry_after(deployed: Stack):
    """From the VM's loopback, each client a loopback address of its own (nginx's per-client
    share is not what stops them): one stream more than the pool holds gets 503 at once."""
    bound = STREAMS_PER_WORKER * STREAM_WORKERS
    clients = bound // CLIENT_STREAMS + 1
    out = deployed.ssh(
        f"timeout 120 python3 - --url 'http://127.0.0.1/events?max_seconds=30'"
        f" --clients {clients} --per-client {CLIENT_STREAMS} --hold 3",
        stdin=HOLDER.read_text(),
    ).stdout
    opened = json.loads(out.splitlines()[0])
    assert opened["opened"] == {"200": bound, "503": clients * CLIENT_STREAMS - bound}, opened
    assert opened["refused"]["retry_after"] == "5", opened
    assert json.loads(opened["refused"]["body"])["error"] == "unavailable", opened
    # The request workers answered throughout, and after.
    assert deployed.get("/healthz").status == 200


def test_the_stream_pool_is_a_program_of_its_own_without_debug_surfaces(deployed: Stack):
    status = deployed.ssh("supervisorctl status sample_app-streams").stdout
    assert " RUNNING " in status, status
    pids = deployed.server_pids(deployed.server, pool="streams")
    assert len(pids) == STREAM_WORKERS + 1, pids  # master and workers
    # Not among the request workers the toolkit numbers, warms and debugs.
    assert not set(pids) & set(deployed.server_pids(deployed.server))
    recorded = {w["pid"] for w in deployed.workers_status().values()}
    assert not set(pids) & recorded
