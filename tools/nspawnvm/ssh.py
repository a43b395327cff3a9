"""SSH access to the VM: its client key, the ssh_config and the known_hosts line that pins
the VM's host key, the ssh command line, and waiting until sshd accepts the key.
"""

from __future__ import annotations

import os
import time
from ipaddress import IPv4Address
from pathlib import Path

from .config import Machine
from .errors import LocalVMError, say
from .host import run, tail
from .processes import process_alive

BOOT_TIMEOUT = float(os.environ.get("LOCALVM_BOOT_TIMEOUT", "120"))


def quote_ssh_path(path: Path) -> str:
    return f'"{path}"' if any(c.isspace() for c in str(path)) else str(path)


def render_ssh_config(
    name: str, address: IPv4Address, key: Path, known_hosts: Path, connect_timeout: int = 5
) -> str:
    # Real host key checking: known_hosts holds the key made for this VM, no trust on first use.
    return (
        f"Host {name}\n"
        f"  HostName {address}\n"
        "  User root\n"
        f"  IdentityFile {quote_ssh_path(key)}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {quote_ssh_path(known_hosts)}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n"
        "  HostKeyAlgorithms ssh-ed25519\n"
        "  PasswordAuthentication no\n"
        "  KbdInteractiveAuthentication no\n"
        f"  ConnectTimeout {connect_timeout}\n"
        "  ServerAliveInterval 15\n"
    )


def known_hosts_line(address: IPv4Address, host_pubkey: str) -> str:
    parts = host_pubkey.split()
    if len(parts) < 2 or parts[0] != "ssh-ed25519":
        raise LocalVMError(f"not an ed25519 public key: {host_pubkey[:40]!r}")
    return f"{address} {parts[0]} {parts[1]}\n"


def ensure_client_key(machine: Machine) -> str:
    if not machine.key.exists():
        comment, key = machine.nat_comment, str(machine.key)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", key])
    return machine.key.with_suffix(".pub").read_text().strip()


def ssh_command(machine: Machine, *remote: str, batch: bool = False) -> list[str]:
    cmd = ["ssh", "-F", str(machine.ssh_config)]
    if batch:
        cmd += ["-o", "BatchMode=yes", "-o", "ConnectTimeout=3"]
    return [*cmd, machine.name, *remote]


def ssh_works(machine: Machine) -> bool:
    if not machine.ssh_config.exists():
        return False
    try:
        return (
            run(ssh_command(machine, "true", batch=True), check=False, timeout=15).returncode == 0
        )
    except LocalVMError:
        return False


def wait_for_ssh(machine: Machine, pid: int) -> None:
    start = time.monotonic()
    last_note = start
    say(f"waiting for sshd on {machine.vm_address}...")
    while not ssh_works(machine):
        now = time.monotonic()
        if not process_alive(pid):
            raise LocalVMError(
                f"{machine.name} stopped while booting; last lines of {machine.console_log}:\n"
                f"{tail(machine.console_log)}"
            )
        if now - start > BOOT_TIMEOUT:
            raise LocalVMError(
                f"sshd on {machine.vm_address} did not accept our key within {BOOT_TIMEOUT:.0f} s "
                f"(VM left running for inspection: see {machine.console_log}, "
                f"then `localvm.py --name {machine.name} destroy`)"
            )
        if now - last_note >= 10:
            say(f"still waiting for sshd ({now - start:.0f} s)...")
            last_note = now
        time.sleep(1)
