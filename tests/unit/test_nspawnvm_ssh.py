"""Unit tests for nspawnvm.ssh: ssh_config and the pinned known_hosts line."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from nspawnvm.errors import LocalVMError
from nspawnvm.ssh import known_hosts_line, render_ssh_config


def test_ssh_config(machine) -> None:
    text = render_ssh_config("lvtest", machine.vm_address, machine.key, machine.known_hosts)
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "Host lvtest"
    for expected in (
        "HostName 10.231.7.2",
        "User root",
        f"IdentityFile {machine.key}",
        "IdentitiesOnly yes",
        f"UserKnownHostsFile {machine.known_hosts}",
        "StrictHostKeyChecking yes",
        "ConnectTimeout 5",
    ):
        assert expected in lines
    assert "StrictHostKeyChecking no" not in text


def test_ssh_config_quotes_paths_with_spaces() -> None:
    text = render_ssh_config(
        "vm", IPv4Address("10.0.0.2"), Path("/a b/key"), Path("/a b/known_hosts")
    )
    assert 'IdentityFile "/a b/key"' in text
    assert 'UserKnownHostsFile "/a b/known_hosts"' in text


def test_known_hosts_line_pins_the_vm_key() -> None:
    line = known_hosts_line(IPv4Address("10.231.7.2"), "ssh-ed25519 AAAAC3Nz root@lvtest\n")
    assert line == "10.231.7.2 ssh-ed25519 AAAAC3Nz\n"
    with pytest.raises(LocalVMError):
        known_hosts_line(IPv4Address("10.231.7.2"), "ssh-rsa AAAAB3 root@lvtest")
    with pytest.raises(LocalVMError):
        known_hosts_line(IPv4Address("10.231.7.2"), "")
