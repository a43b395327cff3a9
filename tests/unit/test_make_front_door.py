"""The README's two commands install what the host lacks before anything else needs it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def make_plan(*args: str) -> str:
    """What make would run, without running it."""
    command = ["make", "--no-print-directory", "-n", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("target", ["demo", "test"])
def test_the_first_thing_a_front_door_target_runs_is_host_packages(target):
    plan = make_plan(target).splitlines()
    commands = [line for line in plan if line.strip() and not line.startswith("#")]
    assert commands[0] == "tools/host-packages", commands[:3]


def test_host_packages_lists_each_package_with_its_reason():
    listed = subprocess.run(
        [str(ROOT / "tools/host-packages"), "--list"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(listed) >= 10
    assert all(len(line.split(None, 1)) == 2 for line in listed), listed


def test_host_names_an_inventory_host_only_and_url_the_load_tests_target():
    assert "--host https://staging.example" in make_plan("loadtest", "URL=https://staging.example")
    # HOST=app2 (make pdb's, make profiler's) is no load test target.
    assert "--host" not in make_plan("loadtest", "HOST=app2")
    assert "--host app2" in make_plan("pdb", "HOST=app2")


def test_loadtest_open_passes_its_variables_to_openload():
    plan = make_plan(
        "loadtest-open",
        "RATE=15",
        "DURATION=10s",
        "SCENARIO=light",
        "URL=https://staging.example",
        "CA=ca.crt",
    )
    line = next(line for line in plan.splitlines() if "openload.py" in line)
    for option in (
        "--rate 15",
        "--duration 10s",
        "--scenario light",
        "--host https://staging.example",
        "--ca-file ca.crt",
    ):
        assert option in line, line
    # Nothing given: openload.py's own defaults (20/s, 30 s, flow, the local VM).
    assert "--rate" not in next(
        line for line in make_plan("loadtest-open").splitlines() if "openload.py" in line
    )
