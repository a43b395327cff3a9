"""/_profiler/ through nginx under each app server: triggered requests only, their context,
no credential saved, bounded disk under load, streams unbuffered, and the page closed to others.

Queries are saved with their values redacted: a test finds its request by a query key."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import MAX_PROFILES, WORKERS
from stack import Stack, assert_unbuffered, secret
from terminal import basic_auth, make_profiler
from wsgiprobe.profiler.scrub import REDACTED

PROFILES = "/var/lib/sample_app/profiles"
# Runs on the VM (no single quotes: it travels in them): argv DIR SECONDS; samples the number
# of profiles every 20 ms, prints the maximum.
COUNT_SAMPLER = """
import glob, sys, time
deadline, most = time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < deadline:
    most = max(most, len(glob.glob(sys.argv[1] + "/*.pkl")))
    time.sleep(0.02)
print(most)
"""
# Runs on the VM: argv DIR; the kept profiles' context records as one JSON list (one pruned
# meanwhile is skipped).
READ_RECORDS = """
import glob, json, sys
records = []
for name in glob.glob(sys.argv[1] + "/*.json"):
    try:
        with open(name) as file:
            records.append(json.load(file))
    except (OSError, ValueError):
        pass
print(json.dumps(records))
"""


def trigger() -> dict[str, str]:
    return {"X-Wsgiprobe-Profile": secret("profiling_token")}


def records(stack: Stack) -> list[dict]:
    """Every kept profile's context record, read on the VM."""
    return json.loads(stack.ssh(f"python3 -c '{READ_RECORDS}' {PROFILES}").stdout)


def profile_count(stack: Stack) -> int:
    return len(stack.ssh(f"find {PROFILES} -name '*.pkl'").stdout.split())


def saved_anywhere(stack: Stack, value: str) -> bool:
    """Whether any file of the profile directory holds that string."""
    found = stack.ssh(f"grep -rqF {value} {PROFILES}", check=False)
    assert found.returncode in (0, 1), found.stderr
    return found.returncode == 0


def showall(stack: Stack) -> str:
    page = stack.loopback("GET", "/_profiler/showall", basic_auth(secret("profiling_password")))
    assert page.status == 200, page.text[:500]
    return page.text


@pytest.mark.every_release
def test_a_triggered_request_is_listed_with_its_worker_and_path(deployed: Stack):
    marker = uuid.uuid4().hex
    assert deployed.request("GET", f"/healthz?{marker}=1", headers=trigger()).status == 200
    (record,) = [r for r in records(deployed) if r["query"] == f"{marker}={REDACTED}"]
    assert record["path"] == "/healthz"
    assert record["method"] == "GET"
    assert record["status"] == 200
    assert record["server"] == deployed.server
    assert 1 <= record["worker"] <= WORKERS
    assert record["pid"] in deployed.server_pids(deployed.server)
    assert record["duration_ms"] > 0
    page = showall(deployed)
    assert "/healthz" in page
    assert f"_w{record['worker']}_p{record['pid']}_" in page


def test_an_untriggered_request_is_not_profiled(deployed: Stack):
    before = profile_count(deployed)
    for headers in ({}, {"X-Wsgiprobe-Profile": "not-the-token"}):
        marker = uuid.uuid4().hex
        assert deployed.request("GET", f"/healthz?{marker}", headers=headers).status == 200
        assert not [r for r in records(deployed) if r["query"] == marker]
    assert profile_count(deployed) == before


# One of each kind of credential a request may carry; none may reach the profile directory.
CREDENTIAL_HEADERS = (
    "Authorization",
    "Proxy-Authorization",
    "X-Api-Key",
    "X-Auth-Token",
    "X-Csrf-Token",
    "X-Amz-Security-Token",
    "X-Hub-Signature-256",
    "X-Session-Id",
    "X-Foo-Secret",  # named by no list: its name gives it away
    "X-Captcha-Oracle",  # profiling_scrub_headers
    "X-Customer-Id",  # no credential, but not on the allowlist
)


@pytest.mark.every_release
def test_no_credential_of_a_dozen_kinds_is_saved(deployed: Stack):
    values = {name: uuid.uuid4().hex for name in (*CREDENTIAL_HEADERS, "cookie", "t", "p", "q")}
    agent = uuid.uuid4().hex  # User-Agent is on the default allowlist
    headers = {
        **trigger(),
        **{name: values[name] for name in CREDENTIAL_HEADERS},
        "Cookie": f"session={values['cookie']}",
        "User-Agent": f"probe/{agent}",
    }
    marker = uuid.uuid4().hex
    query = f"{marker}=1&token={values['t']}&password={values['p']}&q={values['q']}"
    assert deployed.request("GET", f"/healthz?{query}", headers=headers).status == 200
    (record,) = [r for r in records(deployed) if r["query"].startswith(f"{marker}=")]
    assert record["query"] == "&".join(
        f"{key}={REDACTED}" for key in (marker, "token", "password", "q")
    )
    assert saved_anywhere(deployed, agent)  # the search sees the saved headers: this one is there
    assert saved_anywhere(deployed, "HTTP_X_AMZ_SECURITY_TOKEN")  # by name, value redacted
    for value in (*values.values(), secret("profiling_token")):
        assert not saved_anywhere(deployed, value)
    page = showall(deployed)
    assert f"{marker}={REDACTED}&amp;token={REDACTED}" in page
    assert not [value for value in values.values() if value in page]


def test_the_profile_count_stays_within_its_bound_under_load(deployed: Stack):
    seconds = 8.0
    sampler: dict[str, str] = {}

    def sample() -> None:
        sampler["max"] = deployed.ssh(f"python3 -c '{COUNT_SAMPLER}' {PROFILES} {seconds}").stdout

    thread = threading.Thread(target=sample)
    thread.start()
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(lambda i: deployed.request("GET", f"/healthz?n{i}", headers=trigger()).status,
                     range(300))
        )  # fmt: skip
    thread.join()
    assert statuses.count(200) == len(statuses)
    assert len(statuses) > MAX_PROFILES
    assert int(sampler["max"]) <= MAX_PROFILES
    assert profile_count(deployed) == MAX_PROFILES
    # The newest survive: the last requests' profiles are among those kept.
    kept = {r["query"] for r in records(deployed)}
    assert len(kept & {f"n{i}" for i in range(250, 300)}) >= MAX_PROFILES // 2


def test_a_triggered_stream_goes_unbuffered_and_unprofiled_to_the_stream_pool(deployed: Stack):
    """The profiler is the request workers': a stream is the stream pool's, never profiled
    (the profiler's streaming wrapper has unit tests of its own)."""
    marker = f"stream{uuid.uuid4().hex}"  # a query key: records keep keys, and the newest
    arrivals, _, ended = deployed.stream_events(f"/events?max_seconds=3&{marker}=1", trigger())
    assert_unbuffered(arrivals, ended)
    # A triggered request of the request workers' is profiled, marker and all.
    assert deployed.request("GET", f"/healthz?{marker}=1", headers=trigger()).status == 200
    queries = [r["query"] for r in records(deployed)]
    assert any(f"{marker}=" in q for q in queries), queries
    assert not any(q.startswith("max_seconds=") and marker in q for q in queries), queries


def test_the_page_is_refused_outside_the_allow_list(deployed: Stack):
    auth = basic_auth(secret("profiling_password"))
    # This host is not the VM's loopback nor in profiling_allow: 403, password or not.
    assert deployed.request("GET", "/_profiler/showall", headers=auth).status == 403
    assert deployed.get("/_profiler/").status == 403
    assert deployed.get("/%5Fprofiler/showall").status == 403  # nginx matches the decoded path
    # From the VM's loopback: the password is still needed.
    assert deployed.loopback("GET", "/_profiler/showall").status == 401
    assert deployed.loopback("GET", "/_profiler/showall", basic_auth("wrong")).status == 401


def test_the_page_keeps_its_own_policy_through_nginx(deployed: Stack):
    """nginx adds its strict CSP only where the app sent none: Dozer's pages need inline
    handlers (nginx's header, added after the app's, would be the last one read here)."""
    page = deployed.loopback("GET", "/_profiler/showall", basic_auth(secret("profiling_password")))
    assert page.status == 200
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self' 'unsafe-inline'" in policy, policy
    assert page.headers["X-Frame-Options"] == "DENY"


def test_profiles_cannot_be_deleted_with_a_plain_get_or_from_another_site(deployed: Stack):
    assert deployed.request("GET", "/healthz", headers=trigger()).status == 200
    before = profile_count(deployed)
    assert before > 0
    auth = basic_auth(secret("profiling_password"))
    assert deployed.loopback("GET", "/_profiler/delete", auth).status == 405
    cross_site = {**auth, "Origin": "http://attacker.invalid"}
    assert deployed.loopback("POST", "/_profiler/delete", cross_site).status == 403
    assert profile_count(deployed) == before
    same_site = {**auth, "Origin": "http://127.0.0.1"}
    response = deployed.loopback("POST", "/_profiler/delete", same_site)
    assert response.status in (200, 303), response.text[:300]
    assert profile_count(deployed) == 0


@pytest.fixture(autouse=True)
def _deployed_with_the_profiler(deployed: Stack):
    # configs/local turns it on; a failing first check here says so rather than a 404 later.
    assert deployed.ssh(f"test -d {PROFILES}", check=False).returncode == 0


def test_make_profiler_opens_a_tunnel_to_the_page(deployed: Stack):
    page, output = make_profiler(password=secret("profiling_password"))
    assert "All profiles" in page
    assert "/_profiler/showall" in output
    assert "profiling_password" in output  # where the password is, never the password itself
    assert secret("profiling_password") not in output
