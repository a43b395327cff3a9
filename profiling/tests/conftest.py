"""What several of the toolkit's tests share."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process of this test that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
