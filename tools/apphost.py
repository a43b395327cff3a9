"""Reach an app host of an inventory as Ansible does: make profiler, make pdb.

The connection (address, user, ssh options) comes from configs/ENV, templated by Ansible itself
(the local inventory's values are lookups), so the same commands work for the local VM and a
real server. No connection is made to read it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE = Path(sys.executable).parent / "ansible"
FIELDS = {
    "host": "ansible_host | default(inventory_hostname)",
    "user": "ansible_user | default('root')",
    "port": "ansible_port | default(22)",
    "ssh_args": "ansible_ssh_common_args | default('')",
    "name": "inventory_hostname",
    "secrets": "inventory_dir ~ '/.secrets/' ~ inventory_hostname",
    "nginx_port": "nginx_listen_port | default(80)",
    "app_name": "app_name | default('sample_app')",
    "health_path": "app_health_path | default('/healthz')",
    "profiling": "profiling_enabled | default(false)",
    "pdb": "pdb_enabled | default(false)",
    "pdb_base_port": "pdb_base_port | default(4440)",
    # The pdb role's default, app_root/bin/pdb-attach, unless the inventory moves it.
    "pdb_attach_command": "pdb_attach_command | default((app_root | default('/srv/'"
    " ~ (app_name | default('sample_app')))) ~ '/bin/pdb-attach')",
}


@dataclass(frozen=True)
class AppHost:
    host: str
    user: str
    port: str
    ssh_args: str
    name: str
    secrets: str
    nginx_port: str
    app_name: str
    health_path: str
    profiling: str
    pdb: str
    pdb_base_port: str
    pdb_attach_command: str

    def enabled(self, feature: str) -> bool:
        return getattr(self, feature).lower() == "true"

    def secrets_path(self) -> Path:
        path = Path(self.secrets)
        return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path

    def ssh(self, *options: str) -> list[str]:
        """The ssh command line to this host, with extra options before the destination."""
        return [
            "ssh", *shlex.split(self.ssh_args), "-p", self.port, *options,
            f"{self.user}@{self.host}",
        ]  # fmt: skip


def app_host(env: str, host: str = "app[0]") -> AppHost:
    args = json.dumps({"msg": {key: "{{ " + expr + " }}" for key, expr in FIELDS.items()}})
    proc = subprocess.run(
        [str(ANSIBLE), host, "-i", f"configs/{env}", "-m", "ansible.builtin.debug", "-a", args],
        cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "ANSIBLE_CONFIG": "ansible.cfg", "ANSIBLE_NOCOLOR": "1"},
    )  # fmt: skip
    if proc.returncode != 0 or "=>" not in proc.stdout:
        sys.exit(f"cannot read host {host} of configs/{env}:\n{proc.stdout}{proc.stderr}")
    # "<host> | SUCCESS => {...JSON with "msg"...}"
    values = json.loads(proc.stdout.split("=>", 1)[1])["msg"]
    return AppHost(**{key: str(values[key]) for key in FIELDS})
