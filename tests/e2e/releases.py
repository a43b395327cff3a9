"""Versions of the sample app for the redeploy tests, and what the VM says about its releases."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

from conftest import DEPLOY_VARS, WORKERS
from stack import ROOT, Stack

CURRENT = "/srv/sample_app/current"
RELEASES = "/srv/sample_app/releases"
VERSION_FILE = "src/sample_app/version.py"
ORIGINAL_VERSION = re.search(r'"(.+)"', (ROOT / "sample_app" / VERSION_FILE).read_text())[1]


def app_version(
    root: Path, version: str, change: Callable[[Path], None] | None = None
) -> list[dict[str, str]]:
    """A copy of the sample app that says `version` (then changed by `change`, given the copy's
    package dir): the app_sources that deploy it."""
    copy = root / version / "sample_app"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(
        ROOT / "sample_app",
        copy,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", "build"),
    )
    (copy / VERSION_FILE).write_text(f'__version__ = "{version}"\n')
    if change is not None:
        change(copy / "src" / "sample_app")
    return [{"name": "sample_app", "path": str(copy)}]


def deploy(stack: Stack, label: str, **extra: object):
    """A deploy of the server under test with the session's values (so nothing else changes)."""
    return stack.deploy(label, app_server=stack.server, **{**DEPLOY_VARS, **extra})


def serving_release(stack: Stack) -> str:
    return stack.ssh(f'basename "$(readlink {CURRENT})"').stdout.strip()


def releases_on_host(stack: Stack) -> list[str]:
    return stack.ssh(f"ls -1 {RELEASES}").stdout.split()


def assert_serving(stack: Stack, release: str, version: str) -> None:
    """Every worker is warm on `release`, and the app answers with `version`, every time."""
    status = stack.workers_status()
    # The stable index: 1..N again after a graceful reload (gunicorn's HUP, uWSGI's chain).
    assert sorted(status) == list(range(1, WORKERS + 1)), status
    for entry in status.values():
        assert entry["warm"] and entry["release"] == release, status
    versions = {stack.get("/healthz").json()["version"] for _ in range(3 * WORKERS)}
    assert versions == {version}, versions
