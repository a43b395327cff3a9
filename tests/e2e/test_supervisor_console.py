"""supervisor's web console: loopback of the VM only, behind the generated password."""

from __future__ import annotations

import socket

import pytest

from conftest import DEPLOY_VARS
from stack import ROOT, Stack

PASSWORD_FILE = ROOT / "configs/local/.secrets/localvm/supervisor_console_password"
PROBE = """
import base64, sys, urllib.error, urllib.request
request = urllib.request.Request("http://127.0.0.1:9001/")
credentials = sys.stdin.read().strip()
if credentials:
    request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
try:
    print(urllib.request.urlopen(request, timeout=5).status)
except urllib.error.HTTPError as error:
    print(error.code)
"""


@pytest.fixture(scope="module")
def console(stack: Stack) -> Stack:
    if stack.server is None:
        result = stack.deploy("deploy-for-console", **DEPLOY_VARS)
        assert result.rc == 0, result.tail()
    return stack


def _status_on_vm(stack: Stack, credentials: str = "") -> int:
    # Credentials go through stdin: never into a command line or an assertion message.
    stack.ssh(f"cat > /tmp/console_probe.py <<'EOF'\n{PROBE}\nEOF")
    return int(stack.ssh("python3 /tmp/console_probe.py", stdin=credentials).stdout)


def test_console_listens_on_loopback_only(console: Stack):
    listeners = console.ssh("ss -Hltn 'sport = :9001'").stdout.split("\n")
    addresses = {line.split()[3] for line in listeners if line.strip()}
    assert addresses == {"127.0.0.1:9001"}
    with pytest.raises(OSError), socket.create_connection((console.address, 9001), timeout=3):
        pass


def test_console_needs_the_generated_password(console: Stack):
    password = PASSWORD_FILE.read_text().strip()
    assert len(password) >= 32
    assert _status_on_vm(console) == 401
    assert _status_on_vm(console, "admin:wrong") == 401
    assert _status_on_vm(console, f"admin:{password}") == 200
