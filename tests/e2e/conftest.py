"""One VM for the whole end-to-end session; deploys switch it between app servers."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from load import LOADS
from stack import FIGURES, ROOT, TIMINGS, Stack, booted_vm

sys.path.insert(0, str(ROOT / "tools"))
from nspawnvm.rootfs import DEFAULT_RELEASE

# The Debian release of the tests' VMs (make e2e passes it). A test marked release("x") is
# about that release alone: on the other it is deselected, not skipped.
RELEASE = os.environ.get("LOCALVM_RELEASE") or DEFAULT_RELEASE

SERVERS = ("uwsgi", "gunicorn")
# Not the CPU count of the VM, so that a passing worker test proves the variable is used; 4, so
# that the warm-up must reach workers the kernel rarely picks on an idle server.
WORKERS = 4
# Each worker's lazy init costs this much more CPU: the warm-up is seen to do real work.
EXTRA_INIT_SECONDS = 0.3
# Small, so that a short load run passes the profiler's bound many times over.
MAX_PROFILES = 15
# Short rate-limit windows, so that the test that exhausts one waits seconds, not a minute.
RATE_WINDOW = 10
# A signalled worker waits this long for a pdb client: the no-client test waits it out.
PDB_TIMEOUT = 5
SLOW_MAX_SECONDS = 60
DEPLOY_VARS = {
    "app_workers": WORKERS,
    "app_environment": {
        "FLASK_RATE_LIMIT_CREATE": f"20/{RATE_WINDOW}",
        "FLASK_RATE_LIMIT_VERIFY": f"20/{RATE_WINDOW}",
        "FLASK_LAZYINIT_EXTRA_SECONDS": str(EXTRA_INIT_SECONDS),
        # GET /debug/slow: a request to interrupt mid-way (test_pdb.py).
        "FLASK_SLOW_ENDPOINT_MAX_SECONDS": str(SLOW_MAX_SECONDS),
    },
    "profiling_max_profiles": MAX_PROFILES,
    "pdb_timeout": PDB_TIMEOUT,
}


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with booted_vm("end-to-end tests") as stack:
        yield stack


@pytest.fixture(scope="session", params=SERVERS)
def deployed(request: pytest.FixtureRequest, stack: Stack) -> Stack:
    """The stack deployed with the parametrised app server; pytest runs every test of one
    server, in every module, before it switches to the other."""
    server = request.param
    result = stack.deploy(f"deploy-{server}", app_server=server, **DEPLOY_VARS)
    assert result.rc == 0, f"deploy with {server} failed:\n{result.tail()}"
    return stack


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "release(name): only on VMs of that Debian release")
    config.addinivalue_line(
        "markers", "every_release: what each supported release must show (make e2e runs these"
        " on the other release: deploy, warm-up, profiler, pdb, captcha flow, store)",
    )  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    other = [
        item
        for item in items
        if (marker := item.get_closest_marker("release")) and marker.args[0] != RELEASE
    ]
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = [item for item in items if item not in other]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("deploys (wall time on this machine)")
        for label, seconds, changed in TIMINGS:
            terminalreporter.write_line(f"{label:<36} {seconds:7.1f} s   changed={changed}")
    if FIGURES:
        terminalreporter.section("figures measured")
        for line in FIGURES:
            terminalreporter.write_line(line)
    if LOADS:
        terminalreporter.section("loads during the steps (locust flow, requests sent and failed)")
        for load in LOADS:
            terminalreporter.write_line(load.line())
