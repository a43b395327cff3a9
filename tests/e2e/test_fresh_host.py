"""A fresh Debian machine, made bare (debootstrap minbase, in a container): the step that make
demo and make test run first installs every host package, each one's proof is then there, and
the controller's .venv builds (tools/fresh-host-check). Lane C runs it on Debian 13, lane B on
Debian 12 (every_release): no VM, minutes of apt and pip."""

from __future__ import annotations

import subprocess

import pytest

from conftest import RELEASE
from stack import ROOT


@pytest.mark.every_release
def test_the_first_step_of_make_demo_gives_a_bare_debian_everything_it_needs():
    check = subprocess.run(
        [str(ROOT / "tools/fresh-host-check"), RELEASE],
        cwd=ROOT, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    print(check.stdout)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    assert f"fresh-host-check {RELEASE}" in check.stdout and ": passed" in check.stdout
