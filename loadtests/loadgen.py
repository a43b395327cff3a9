"""run.py --loadgen ENV: locust workers on the loadgen hosts of configs/ENV (loadgen.yml).

What run.py needs to drive them: the inventory's hosts (ansible-inventory, no connection), the
target (the first lb host, else the first app host: its address from a real fact lookup; https
on nginx_tls_port with configs/ENV's CA, unless the inventory sets tls_mode off), the
oracle secret's default, the playbook's command lines, and afterwards the workers' own counts.
All of it pure but for `discover` and `run_step`, which call Ansible.

How a run goes: run.py starts the master, listening on every address and expecting
len(hosts) * workers_per_host remote workers (plus its local ones), then `loadgen.yml`
(loadgen_step=start) starts the workers on each host as Ansible async jobs (poll 0) bounded by
`time_limit`. The master sends the workers its own options, its --report-dir among them: in a
loadgen run that is the report folder's bare name (the master runs from the reports root), so
that each remote worker writes its own count into its run's folder on its host
(roles/loadgen: loadgen_runs_dir/RUN/workers/). Once the master ended, loadgen.yml
(loadgen_step=collect) brings those counts, the workers' logs and output back into the
report's workers/HOST/ and removes the run's folder from the host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import target as targets

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
PLAYBOOK = ROOT / "loadgen.yml"
NGINX_DEFAULTS = ROOT / "roles/nginx/defaults/main.yml"
TLS_DEFAULTS = ROOT / "roles/tls/defaults/main.yml"
# The master waits this long for every worker: the playbook connects to each host first.
EXPECT_WORKERS_MAX_WAIT = 120
# Beyond the run's duration and that wait: the stop timeout, the final reports, slack.
TIME_LIMIT_MARGIN = 90
# Mirrors roles/loadgen/defaults/main.yml (the paths on the hosts, for --dry-run and the tests).
ROLE_ROOT = "/srv/loadgen"
ROLE_RUNS_DIR = "/var/lib/loadgen/runs"
ROLE_USER = "loadgen"

_DURATION = re.compile(r"^(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?$")


class LoadgenError(Exception):
    """A loadgen run cannot start: the message says why."""


@dataclass
class Inventory:
    """Groups (children resolved) and their hosts, in the inventory's order."""

    groups: dict[str, list[str]]
    hostvars: dict[str, dict[str, Any]] = field(default_factory=dict)

    def hosts(self, group: str) -> list[str]:
        return list(self.groups.get(group, []))


def parse_inventory(data: dict[str, Any]) -> Inventory:
    """`ansible-inventory --list` output: each group's hosts, its children's included."""
    groups = {name: body for name, body in data.items() if name != "_meta"}

    def hosts_of(name: str, seen: frozenset[str] = frozenset()) -> list[str]:
        body = groups.get(name) or {}
        found = list(body.get("hosts", []))
        for child in body.get("children", []):
            if child not in seen:
                found += hosts_of(child, seen | {name})
        return list(dict.fromkeys(found))  # a host in two children: once, at its first place

    hostvars = (data.get("_meta") or {}).get("hostvars") or {}
    return Inventory({name: hosts_of(name) for name in groups}, hostvars)


def target_host(inventory: Inventory) -> str:
    """The host facing the clients: the first lb host, else the first app host."""
    candidates = inventory.hosts("lb") or inventory.hosts("app")
    if not candidates:
        raise LoadgenError("the inventory has no lb nor app host to load (give --host)")
    return candidates[0]


def secret_path(env_dir: Path, inventory: Inventory) -> Path:
    """Where the deploy keeps the oracle secret the app hosts share (roles/app:
    app_shared_secrets_dir, under the first app host's name)."""
    apps = inventory.hosts("app")
    if not apps:
        raise LoadgenError(f"{env_dir} has no app host: no oracle secret of its own")
    return env_dir / ".secrets" / apps[0] / "oracle_secret"


def parse_duration(text: str) -> int:
    """Seconds of a locust --run-time: 30s, 5m, 1h30m, 90 (seconds)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    match = _DURATION.match(text)
    if not text or not match or not any(match.groups()):
        raise ValueError(f"not a run time: {text!r} (e.g. 30s, 5m, 1h30m)")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def time_limit(run_seconds: int) -> int:
    """The workers' async limit: the master's wait for them, the run, a margin."""
    return EXPECT_WORKERS_MAX_WAIT + run_seconds + TIME_LIMIT_MARGIN


def scenario_files(files: str) -> list[str]:
    """run.locustfiles() (comma-separated paths) as names in the hosts' locustfiles folder."""
    return [Path(path).name for path in files.split(",") if path]


def worker_argv(
    *,
    run_id: str,
    host: str,
    n: int,
    files: list[str],
    master_host: str,
    master_port: int,
    target: str,
    root: str = ROLE_ROOT,
    runs_dir: str = ROLE_RUNS_DIR,
) -> list[str]:
    """Worker n's command line on `host`, as roles/loadgen/tasks/start.yml builds it (the
    tests check that they agree); the first arguments after the wrapper are the secret's file
    and the CA file's (the run's copy; empty when the target needs none)."""
    run_dir = f"{runs_dir}/{run_id}"
    return [
        f"{root}/bin/locust-worker",
        f"{run_dir}/oracle_secret",
        f"{run_dir}/ca.crt",
        "-f",
        ",".join(f"{root}/locustfiles/{name}" for name in files),
        "--worker",
        "--master-host",
        master_host,
        "--master-port",
        str(master_port),
        "--host",
        target,
        "--logfile",
        f"{run_dir}/{host}-worker-{n}.log",
    ]


@dataclass
class Setup:
    """What a loadgen run needs from configs/ENV."""

    env: str
    env_dir: Path
    inventory: Inventory
    workers_per_host: int
    target: str = ""  # the base URL, when looked up (no --host)
    target_host: str = ""
    ca_file: Path | None = None  # the CA the target's certificate verifies against (local-ca)

    @property
    def hosts(self) -> list[str]:
        return self.inventory.hosts("loadgen")

    @property
    def remote_workers(self) -> int:
        return len(self.hosts) * self.workers_per_host


def start_vars(
    setup: Setup,
    *,
    run_id: str,
    target: str,
    files: list[str],
    master_port: int,
    master_host: str,
    run_seconds: int,
    oracle_secret_file: str,
    locust_version: str,
    ca_file: str = "",
) -> dict[str, Any]:
    """loadgen.yml's extra variables for the start step (no secret: a file's path at most;
    ca_file: the CA file on the controller the workers verify the target against, copied into
    the run's folder; empty: the hosts' trust store)."""
    return {
        "loadgen_step": "start",
        "loadgen_run_id": run_id,
        "loadgen_workers": setup.workers_per_host,
        "loadgen_master_host": master_host,
        "loadgen_master_port": master_port,
        "loadgen_target": target,
        "loadgen_locustfiles": files,
        "loadgen_time_limit": time_limit(run_seconds),
        "loadgen_oracle_secret_file": oracle_secret_file,
        "loadgen_locust_version": locust_version,
        "loadgen_ca_file": ca_file,
    }


def collect_vars(setup: Setup, *, run_id: str, collect_dir: Path) -> dict[str, Any]:
    return {
        "loadgen_step": "collect",
        "loadgen_run_id": run_id,
        "loadgen_workers": setup.workers_per_host,
        "loadgen_collect_dir": str(collect_dir),
    }


def _tool(name: str) -> str:
    """An Ansible command of this interpreter's venv, else of the PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def playbook_command(env_dir: Path, extra_vars: dict[str, Any]) -> list[str]:
    return [
        _tool("ansible-playbook"),
        "-i",
        str(env_dir),
        str(PLAYBOOK),
        "-e",
        json.dumps(extra_vars),
    ]


def ansible_env(**more: str) -> dict[str, str]:
    """This environment, with the repository's ansible.cfg unless one is chosen already."""
    env = dict(os.environ)
    env.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
    env.update(more)
    return env


# Ad-hoc commands answer in JSON (ansible.cfg's task profile may print lines around it).
_JSON_OUTPUT = {
    "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
    "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
}
_JSON_START = re.compile(r"^\{", re.MULTILINE)


def adhoc_result(output: str, host: str) -> dict[str, Any]:
    """The one host's result of an ad-hoc command run with the json callback."""
    try:
        start = _JSON_START.search(output)
        if start is None:
            raise ValueError("no JSON document")
        data, _ = json.JSONDecoder().raw_decode(output, start.start())
        return data["plays"][0]["tasks"][0]["hosts"][host]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise LoadgenError(f"no result for {host} in ansible's answer ({exc})") from exc


def default_ipv4(result: dict[str, Any], host: str) -> str:
    if result.get("unreachable") or result.get("failed"):
        raise LoadgenError(f"{host}: {result.get('msg', 'failed')}".strip())
    address = ((result.get("ansible_facts") or {}).get("ansible_default_ipv4") or {}).get("address")
    if not address:
        raise LoadgenError(f"{host} has no default IPv4 address (give --host)")
    return address


def listen_port(result: dict[str, Any], role_default: int, name: str = "nginx_listen_port") -> int:
    """The port variable as the inventory sets it (debug var=...), else the role's default."""
    value = result.get(name)
    try:
        return int(value)
    except (TypeError, ValueError):  # undefined: "<< error ... undefined >>"
        return role_default


def role_default(defaults: Path, name: str) -> Any:
    import yaml  # Ansible's dependency: there whenever Ansible is

    return yaml.safe_load(defaults.read_text())[name]


def nginx_default_port(name: str = "nginx_listen_port") -> int:
    return int(role_default(NGINX_DEFAULTS, name))


def tls_mode(inventory: Inventory, host: str) -> str:
    """The host's tls_mode as the inventory sets it (literally), else the tls role's default."""
    value = inventory.hostvars.get(host, {}).get("tls_mode")
    return (
        str(value)
        if isinstance(value, str) and "{" not in value
        else role_default(TLS_DEFAULTS, "tls_mode")
    )


def tls_target(
    env: str, mode: str, address: str, port: int, configs: Path = CONFIGS
) -> tuple[str, Path | None]:
    """The base URL of the target and the CA to trust: https on port with configs/ENV's CA
    (local-ca) or the system's store (acme); tls_mode off: plain http (port: nginx's)."""
    if mode == "off":
        return targets.url_for(address, port, "http"), None
    ca = targets.require_ca(env, configs) if mode == "local-ca" else None
    return targets.url_for(address, port), ca


def _adhoc(env_dir: Path, host: str, module: str, args: str) -> dict[str, Any]:
    cmd = [_tool("ansible"), "-i", str(env_dir), host, "-m", module, "-a", args]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=ansible_env(**_JSON_OUTPUT), capture_output=True, text=True
    )
    return adhoc_result(proc.stdout, host)


def discover(env: str, workers_per_host: int, *, need_target: bool) -> Setup:
    """Reads configs/ENV (ansible-inventory, no connection) and, without --host, looks the
    target's address up on the host itself (a fact) and its nginx port in the inventory."""
    env_dir = CONFIGS / env
    if "/" in env or not env_dir.is_dir():
        raise LoadgenError(f"no configs/{env} (there: {', '.join(_envs())})")
    try:
        proc = subprocess.run(
            [_tool("ansible-inventory"), "-i", str(env_dir), "--list"],
            cwd=ROOT,
            env=ansible_env(),
            capture_output=True,
            text=True,
        )
    except OSError as exc:
        raise LoadgenError(f"cannot run ansible-inventory ({exc}); try make venv") from exc
    if proc.returncode:
        raise LoadgenError(f"ansible-inventory -i {env_dir} failed: {proc.stderr.strip()[-400:]}")
    inventory = parse_inventory(json.loads(proc.stdout))
    setup = Setup(env, env_dir, inventory, workers_per_host)
    if not setup.hosts:
        raise LoadgenError(f"configs/{env} has no host in group loadgen")
    if need_target:
        setup.target_host = target_host(inventory)
        facts = _adhoc(
            env_dir, setup.target_host, "ansible.builtin.setup", "filter=ansible_default_ipv4"
        )
        address = default_ipv4(facts, setup.target_host)
        mode = tls_mode(inventory, setup.target_host)
        port_var = "nginx_listen_port" if mode == "off" else "nginx_tls_port"
        port = listen_port(
            _adhoc(env_dir, setup.target_host, "ansible.builtin.debug", f"var={port_var}"),
            nginx_default_port(port_var),
            port_var,
        )
        try:
            setup.target, setup.ca_file = tls_target(env, mode, address, port)
        except targets.TargetError as exc:
            raise LoadgenError(str(exc)) from exc
    return setup


def _envs() -> list[str]:
    return sorted(p.name for p in CONFIGS.iterdir() if p.is_dir()) if CONFIGS.is_dir() else []


_SAID = re.compile(r'"msg": "(loadgen: [^"]*)"')


def run_step(cmd: list[str], log: Path) -> tuple[int, list[str]]:
    """Runs a loadgen.yml step, its output into `log`; its exit code and what it said."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        code = subprocess.run(
            cmd, cwd=ROOT, env=ansible_env(), stdout=out, stderr=subprocess.STDOUT
        ).returncode
    return code, _SAID.findall(log.read_text(errors="replace"))


@dataclass
class WorkerCount:
    where: str  # the loadgen host, or "local"
    worker: str  # locust's client id
    requests: int
    failures: int


def worker_counts(workers_dir: Path) -> list[WorkerCount]:
    """Each worker's own count: workers/ID.json (local workers), workers/HOST/workers/ID.json
    (collected from a loadgen host: its run's folder as it was there)."""
    found = []
    for path in sorted(workers_dir.glob("**/*.json")):
        try:
            data = json.loads(path.read_text())
            requests, failures = int(data["requests"]), int(data["failures"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        parts = path.relative_to(workers_dir).parts
        where = parts[0] if len(parts) > 1 else "local"
        found.append(WorkerCount(where, path.stem, requests, failures))
    return found


def counts_summary(counts: list[WorkerCount], master_requests: int | None) -> dict[str, Any]:
    """For summary.json: each worker's count, their sum, whether the master's total is it."""
    total = sum(c.requests for c in counts)
    return {
        "worker_counts": [vars(c) for c in counts],
        "worker_requests_sum": total,
        "worker_failures_sum": sum(c.failures for c in counts),
        "master_requests": master_requests,
        "master_is_sum": master_requests == total if master_requests is not None else None,
    }
