"""The lab the scale-out tests deploy to: three local VMs on one private network (`make vm
N=3`), as configs/lab names them: lb1 (nginx balancing, the shared Redis), app1 and app2."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
from dataclasses import dataclass, replace
from ipaddress import IPv4Network
from pathlib import Path

import yaml

from stack import LOCALVM, ROOT, Deploy, Stack

INVENTORY = "configs/lab"
NAME = os.environ["LOCALVM_LAB"]  # stack.py: the tests' own lab unless told
SUBNET = IPv4Network(os.environ["LOCALVM_LAB_SUBNET"])
# Inventory host -> its VM, in configs/lab/hosts.yml's order (the VM's index).
HOSTS = {"lb1": 1, "app1": 2, "app2": 3}
WORKERS = 2  # per app host: three VMs share this machine's cores
SECRETS = ROOT / INVENTORY / ".secrets"
# One line of PLAY RECAP: host, then its counts.
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", re.M)


def lab_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LOCALVM, "--name", NAME, "--subnet", str(SUBNET), "lab", *args],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip


def vm(host: str) -> Stack:
    """The Stack of one lab host: SSH and HTTP to that VM; its playbooks run on the whole lab."""
    index = HOSTS[host]
    name = f"{NAME}{index}"
    address = str(SUBNET.network_address + 1 + index)
    ssh_config = f"/var/lib/localvm/{name}/ssh_config"
    return Stack(name=name, address=address, ssh_config=ssh_config, inventory=INVENTORY)


@dataclass
class Lab:
    lb: Stack
    app1: Stack
    app2: Stack

    @property
    def apps(self) -> tuple[Stack, Stack]:
        return self.app1, self.app2

    @property
    def host_side(self) -> str:
        """The host's own address on the lab network: a host outside the topology."""
        return str(SUBNET.network_address + 1)

    def deploy(self, label: str, inventory: Path | None = None, **extra_vars: object) -> Deploy:
        """deploy.yml on the whole lab (or another inventory of its hosts), with the server it
        runs (unless extra_vars name one)."""
        values = {"app_server": self.lb.server, "app_workers": WORKERS, **extra_vars}
        stack = replace(self.lb, inventory=str(inventory)) if inventory else self.lb
        return stack.deploy(label, **{k: v for k, v in values.items() if v is not None})

    def hosts_answering(self, requests: int) -> list[str]:
        """The app host that answered each of that many /healthz through the lb."""
        return [self.lb.get("/healthz").json()["host"] for _ in range(requests)]


def inventory_without(host: str, directory: Path) -> Path:
    """configs/lab without one host, written in directory; its group_vars and secrets stay
    configs/lab's, so that only the topology differs."""
    hosts = yaml.safe_load((ROOT / INVENTORY / "hosts.yml").read_text())
    for group in hosts["all"]["children"].values():
        group["hosts"].pop(host, None)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    for shared in ("group_vars", ".secrets"):
        (directory / shared).symlink_to(ROOT / INVENTORY / shared)
    return directory


def changed_by_host(deploy: Deploy) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in RECAP.finditer(deploy.output)}


def oracle_file() -> Path:
    """The oracle secret the app hosts share (kept under the first app host's name)."""
    return SECRETS / "app1" / "oracle_secret"


def connect(address: str, port: int, timeout: float = 3) -> str:
    """'open', 'refused' or 'timeout': what a TCP connect from here meets."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"


def connect_from(stack: Stack, address: str, port: int) -> str:
    """The same, from one of the lab's VMs."""
    code = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(({address!r}, {port}), timeout=3); print('open')\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except TimeoutError: print('timeout')\n"
    )
    return stack.ssh(f"python3 -c {shlex.quote(code)}").stdout.strip()
