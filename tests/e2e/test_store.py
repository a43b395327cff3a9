"""The store: Valkey on Debian 13, Redis on Debian 12, each with the password, loopback only
and the memory limit; a host switched to the other implementation keeps one server."""

from __future__ import annotations

import shlex

import pytest

from conftest import DEPLOY_VARS
from stack import Stack, secret

# The redis role's choice per release (its default), as a user reads it in the README.
EXPECTED = {"trixie": "valkey-server", "bookworm": "redis-server"}
# Runs on the VM: RESP commands to the store on loopback, each reply's first line.
RESP_CLIENT = """
import socket, sys
with socket.create_connection(("127.0.0.1", 6379), timeout=5) as s:
    f = s.makefile("rb")
    for command in sys.argv[1:]:
        words = [w.encode() for w in command.split()]
        s.sendall(b"*%d\\r\\n" % len(words))
        s.sendall(b"".join(b"$%d\\r\\n%s\\r\\n" % (len(w), w) for w in words))
        line = f.readline().decode().strip()
        if line.startswith("*"):  # an array of bulk strings: CONFIG GET's name and value
            values = []
            for _ in range(int(line[1:])):
                f.readline()  # the string's length
                values.append(f.readline().decode().strip())
            line = " ".join(values)
        print(line)
"""


def store(stack: Stack, *commands: str) -> list[str]:
    args = " ".join(shlex.quote(c) for c in commands)
    return stack.ssh(f"python3 -c {shlex.quote(RESP_CLIENT)} {args}").stdout.splitlines()


@pytest.mark.every_release
def test_the_release_has_its_store_server(deployed: Stack):
    service = deployed.store_service()
    assert service == EXPECTED[deployed.release()]
    assert deployed.ssh(f"systemctl is-active {service}").stdout.strip() == "active"


@pytest.mark.every_release
def test_the_store_wants_the_password_listens_on_loopback_and_has_its_limit(deployed: Stack):
    password = secret("redis_password")
    replies = store(deployed, "PING", f"AUTH {password}", "PING", "CONFIG GET maxmemory")
    assert replies[0].startswith("-NOAUTH"), replies
    assert replies[1:3] == ["+OK", "+PONG"], replies
    assert replies[3] == f"maxmemory {128 * 1024 * 1024}", replies
    listening = deployed.ssh("ss -Hltn 'sport = :6379'").stdout.split("\n")
    addresses = {line.split()[3] for line in listening if line.strip()}
    assert addresses == {"127.0.0.1:6379"}, listening


@pytest.mark.every_release
@pytest.mark.release("bookworm")
def test_valkey_on_debian_12_is_refused_before_any_change(deployed: Stack):
    """Debian 12 does not package Valkey: preflight says so and the play stops."""
    result = deployed.deploy("store-valkey-refused", redis_implementation="valkey", **DEPLOY_VARS)
    assert result.rc != 0
    assert "bookworm does not package valkey-server" in result.output, result.tail()
    assert result.changed == 0, result.tail()
    assert deployed.store_service() == "redis-server"


# The store role does not depend on the app server: one server's deploy shows it.
@pytest.mark.release("trixie")
@pytest.mark.parametrize("deployed", ["uwsgi"], indirect=True)
def test_a_host_switched_to_the_other_store_runs_that_one_only(deployed: Stack):
    """Where both are packaged (Debian 13): Redis in place of Valkey, and back."""
    try:
        result = deployed.deploy(
            "store-redis", app_server=deployed.server, redis_implementation="redis", **DEPLOY_VARS
        )
        assert result.rc == 0, result.tail()
        assert deployed.store_service() == "redis-server"
        assert deployed.ssh("dpkg-query -W -f '${Status}' valkey-server", check=False).stdout in (
            "",
            "deinstall ok config-files",
        )
        assert deployed.get("/healthz").json()["store"] == "ok"
    finally:
        back = deployed.deploy("store-default", app_server=deployed.server, **DEPLOY_VARS)
    assert back.rc == 0, back.tail()
    assert deployed.store_service() == "valkey-server"
    assert deployed.get("/healthz").json()["store"] == "ok"
