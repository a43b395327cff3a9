"""The README's two commands install what the host lacks before anything else needs it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("target", ["demo", "test"])
def test_the_first_thing_a_front_door_target_runs_is_host_packages(target):
    # make -n prints what it would run, in order, without running it.
    plan = subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    commands = [line for line in plan if line.strip() and not line.startswith("#")]
    assert commands[0] == "tools/host-packages", commands[:3]


def test_host_packages_lists_each_package_with_its_reason():
    listed = subprocess.run(
        [str(ROOT / "tools/host-packages"), "--list"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(listed) >= 10
    assert all(len(line.split(None, 1)) == 2 for line in listed), listed
