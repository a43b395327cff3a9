"""Shared fixtures of the unit tests (no root, no network, no containers).

Puts tools/ on sys.path so that the tests import the `nspawnvm` package of tools/localvm.py.
"""

from __future__ import annotations

import sys
from ipaddress import IPv4Network
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

from nspawnvm.config import Machine, VMState


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine("lvtest", IPv4Network("10.231.7.0/24"), tmp_path)


def _make_state(**overrides: object) -> VMState:
    values: dict[str, object] = {
        "name": "lvtest",
        "nspawn_pid": 1685,
        "container_pid1": 1687,
        "subnet": "10.231.7.0/24",
        "host_address": "10.231.7.1",
        "vm_address": "10.231.7.2",
        "iface": "ve-lvtest",
        "forwarding_was": "0",
        "nat_rule": ["POSTROUTING", "-s", "10.231.7.0/24"],
        "started_at": 1700000000.5,
    }
    values.update(overrides)
    return VMState(**values)


@pytest.fixture
def make_state():
    """A VMState as `up` records it for the `machine` fixture; keyword arguments override."""
    return _make_state
