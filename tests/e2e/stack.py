"""The deployed stack as the end-to-end tests see it: the VM, deploys, SSH and HTTPS (verified
against the config's own CA only; plain HTTP only from the VM's loopback)."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCALVM = [sys.executable, str(ROOT / "tools" / "localvm.py")]
# The tests destroy the VMs they boot: run as a bare `pytest tests/e2e/...`, they boot VMs of
# their own (lane A's of make e2e), never the user's (make vm's flaskvm, its lab).
for _variable, _value in {
    "LOCALVM_NAME": "flasktest",
    "LOCALVM_SUBNET": "10.231.1.0/24",
    "LOCALVM_LAB": "e2elab",
    "LOCALVM_LAB_SUBNET": "10.231.4.0/24",
}.items():
    os.environ.setdefault(_variable, _value)
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
LOG_DIR = Path(os.environ.get("E2E_LOG_DIR", "/tmp/e2e-logs"))
# Every deploy of the session: (label, seconds, changed), printed at the end of the run.
TIMINGS: list[tuple[str, float, int]] = []
# Figures the tests measured, one line each, printed at the end of the run too.
FIGURES: list[str] = []
SECRETS = ROOT / "configs/local/.secrets/localvm"
# Which app server runs on the VM, its master and its workers, as the toolkit finds them there
# (the sources the app's env file names): what the warm-up and pdb-attach see too.
DISCOVERY = (
    "/srv/sample_app/bin/run-with-env /srv/sample_app/current/venv/bin/python"
    " -m wsgiprobe.discovery --json"
)
# Runs on the VM: one HTTP request to nginx on its loopback, the answer as one JSON line.
LOOPBACK_CLIENT = """
import json, sys, urllib.error, urllib.request
method, url, headers, body = json.loads(sys.stdin.read())
request = urllib.request.Request(url, data=body and body.encode(), headers=headers, method=method)
try:
    with urllib.request.urlopen(request, timeout=30) as r:
        status, head, data = r.status, dict(r.headers.items()), r.read()
except urllib.error.HTTPError as e:
    status, head, data = e.code, dict(e.headers.items()), e.read()
print(json.dumps([status, head, data.decode("utf-8", "replace")]))
"""
# The local CA's certificate of a config (tls_mode local-ca), generated on the first deploy: the
# one certificate the tests trust for the VMs' HTTPS, as `make -s tls-ca` prints it.
TLS_CA = Path(".secrets/tls-ca/ca.crt")
TLS_PORT = 443  # nginx_tls_port
TLS_DIR = "/etc/ssl/sample_app"  # the tls role's tls_dir for the sample app
RECAP = re.compile(r"^\S+\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def require_booted(up: subprocess.CompletedProcess[str], what: str) -> None:
    """Check `localvm.py up` (or `lab up`): exit 2 means this host cannot boot VMs, a skip
    outside CI and a failure under it."""
    if up.returncode == 2:
        # The VM tool's one-line reason: not root, no nspawn, ...
        reason = up.stderr.strip().splitlines()[-1] if up.stderr.strip() else "cannot boot"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} cannot run under CI: {reason}")
        pytest.skip(reason)
    assert up.returncode == 0, f"{what}: booting failed:\n{up.stdout}{up.stderr}"


def localvm(*args: str) -> subprocess.CompletedProcess[str]:
    """tools/localvm.py ARGS, on the VM LOCALVM_NAME names."""
    return subprocess.run([*LOCALVM, *args], cwd=ROOT, capture_output=True, text=True)


@contextmanager
def booted_vm(what: str, **fields: Any) -> Iterator[Stack]:
    """The VM LOCALVM_NAME names, booted by `localvm.py up`, as a Stack (more of its fields:
    `fields`); destroyed after, unless KEEP_VM=1."""
    up = subprocess.run([*LOCALVM, "up"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    require_booted(up, what)
    name = os.environ["LOCALVM_NAME"]
    address = localvm("address").stdout.strip()
    ssh_config = localvm("ssh-config").stdout.strip()
    yield Stack(name=name, address=address, ssh_config=ssh_config, **fields)
    if os.environ.get("KEEP_VM") == "1":
        print(f"\nKEEP_VM=1: {name} stays up at {address} (make ssh LOCALVM_NAME={name})")
    else:
        localvm("destroy")


@dataclass
class Deploy:
    rc: int
    output: str
    seconds: float
    log: Path

    @property
    def changed(self) -> int:
        return sum(int(m.group(1)) for m in RECAP.finditer(self.output))

    def tail(self, lines: int = 60) -> str:
        return f"(full log: {self.log})\n" + "\n".join(self.output.splitlines()[-lines:])


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


# nginx_client_header_buffers' default, 3 8k: what nginx lets through and what it refuses.
HEADER_LINE = 8 * 1024
HEADER_LINES = 3


def many_headers() -> dict[str, str]:
    """700 small headers (~11 KB; uWSGI dropped over 120): nginx passes them (not ~1000)."""
    return {f"X-Many-{i}": "v" for i in range(700)}


def long_headers(lines: int) -> dict[str, str]:
    """Header lines of nearly HEADER_LINE bytes: nginx passes HEADER_LINES - 1 of them, and
    refuses HEADER_LINES + 1 with its own 400."""
    return {f"X-Line-{i}": "a" * (HEADER_LINE - 200) for i in range(lines)}


def secret(name: str) -> str:
    """A secret the deploys generated for the local inventory (read after the first deploy)."""
    return (SECRETS / name).read_text().strip()


def assert_unbuffered(arrivals: list[float], ended: float) -> None:
    """A 3 s event stream reached the client unbuffered: the first event long before the end,
    the others spread out."""
    assert len(arrivals) >= 3, arrivals
    assert arrivals[0] < 1.0, arrivals
    assert ended >= 2.5, ended
    assert arrivals[-1] - arrivals[0] >= 1.5, arrivals


T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], seconds: float, interval: float = 0.2) -> T:
    """check's first true value, asked every interval seconds; AssertionError after seconds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {seconds} s")


# Contexts by CA file (and its change time): every request reuses one, a CA made anew is read anew.
_CONTEXTS: dict[tuple[Path, int], ssl.SSLContext] = {}


def tls_context(ca_file: Path, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A client context that trusts that CA file alone (not the host's store) and verifies the
    server's certificate and name (its IP address here); alpn: protocols to offer (a new
    context, not the shared one)."""
    key = (ca_file, ca_file.stat().st_mtime_ns)
    if alpn is None and key in _CONTEXTS:
        return _CONTEXTS[key]
    # PROTOCOL_TLS_CLIENT: verification and hostname checks on, no default CAs loaded.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(ca_file))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    if alpn is None:
        _CONTEXTS[key] = context
    else:
        context.set_alpn_protocols(alpn)
    return context


@dataclass
class Stack:
    name: str
    address: str
    ssh_config: str
    server: str | None = None
    # The inventory the playbooks run with: every host of it, this one included.
    inventory: str = "configs/local"

    def deploy(self, label: str, **extra_vars: object) -> Deploy:
        """Run the playbook against the VM, as `make deploy` does, logging to LOG_DIR."""
        result = self.playbook("deploy.yml", label, **extra_vars)
        if result.rc == 0 and "app_server" in extra_vars:
            self.server = str(extra_vars["app_server"])
        return result

    def rollback(self, label: str) -> Deploy:
        """`make rollback`, as a user runs it (the play's rollback part), logging to LOG_DIR."""
        return self.playbook("deploy.yml", label, tags="rollback")

    def playbook(
        self, playbook: str, label: str, *, tags: str = "", **extra_vars: object
    ) -> Deploy:
        """Run one of the project's playbooks against the VM (tags: those parts of it only),
        logging to LOG_DIR."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = LOG_DIR / f"{len(TIMINGS):02d}-{label}.log"
        args = [str(ANSIBLE_PLAYBOOK), "-i", self.inventory, playbook]
        if tags:
            args += ["--tags", tags]
        for key, value in extra_vars.items():
            # JSON keeps types: a dict stays a dict, 3 stays an int.
            args += ["-e", json.dumps({key: value})]
        env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
        started = time.monotonic()
        proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - started
        output = proc.stdout + proc.stderr
        log.write_text(output)
        result = Deploy(proc.returncode, output, seconds, log)
        TIMINGS.append((label, seconds, result.changed))
        return result

    def warm_up(self, label: str) -> subprocess.CompletedProcess[str]:
        """`make warmup`, as a user runs it (the play's warm-up part), logging to LOG_DIR."""
        env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
        proc = subprocess.run(
            [str(ANSIBLE_PLAYBOOK), "-i", self.inventory, "deploy.yml", "--tags", "warmup"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        (LOG_DIR / f"warmup-{label}.log").write_text(proc.stdout + proc.stderr)
        return proc

    def workers_status(self) -> dict[int, dict]:
        """GET /lazyinit?status from the VM's loopback: the workers that answered it, by index."""
        response = self.loopback("GET", "/lazyinit?status")
        assert response.status == 200, response.text
        return {entry["worker"]: entry for entry in response.json()["workers"]}

    @property
    def ca_file(self) -> Path:
        """The CA certificate of the stack's config: the one the tests trust for its HTTPS."""
        return ROOT / self.inventory / TLS_CA

    @property
    def base_url(self) -> str:
        """Where a client outside the VM reaches the app: nginx's TLS port."""
        return f"https://{self.address}"

    def tls_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        return tls_context(self.ca_file, alpn)

    def tls_socket(self, timeout: float = 30, alpn: list[str] | None = None) -> ssl.SSLSocket:
        """A TLS connection to nginx, handshake done and certificate verified, for the tests
        that write their own bytes (slow bodies, held connections)."""
        raw = socket.create_connection((self.address, TLS_PORT), timeout=timeout)
        try:
            return self.tls_context(alpn).wrap_socket(raw, server_hostname=self.address)
        except BaseException:
            raw.close()
            raise

    def served_certificate(self) -> dict[str, Any]:
        """The certificate nginx serves on its TLS port, as ssl reports a verified one
        (serialNumber, notBefore, notAfter, subjectAltName, ...)."""
        with self.tls_socket(timeout=10) as connection:
            return connection.getpeercert()

    def installed_serial(self) -> int:
        """The serial of the certificate installed for nginx on the VM (tls_certificate)."""
        out = self.ssh(f"openssl x509 -noout -serial -in {TLS_DIR}/fullchain.pem").stdout
        return int(out.strip().partition("=")[2], 16)

    def installed_key_mode(self) -> list[str]:
        """[mode, owner] of the certificate's private key on the VM (tls_certificate_key)."""
        return self.ssh(f"stat -c '%a %U' {TLS_DIR}/privkey.pem").stdout.split()

    def https_connection(self, timeout: float = 10) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self.address, TLS_PORT, timeout=timeout, context=self.tls_context()
        )

    def ssh(
        self, command: str, check: bool = True, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["ssh", "-F", self.ssh_config, "-o", "BatchMode=yes", self.name, command],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"on the VM, {command!r} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> HttpResponse:
        request = urllib.request.Request(
            f"{self.base_url}{path}", data=body, headers=headers or {}, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.tls_context()) as r:
                return HttpResponse(r.status, dict(r.headers.items()), r.read())
        except urllib.error.HTTPError as error:
            return HttpResponse(error.code, dict(error.headers.items()), error.read())

    def loopback(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: str | None = None,
    ) -> HttpResponse:
        """A request from the VM's own loopback, the one client debug surfaces let in."""
        payload = json.dumps([method, f"http://127.0.0.1{path}", headers or {}, body])
        out = self.ssh(f"python3 -c '{LOOPBACK_CLIENT}'", stdin=payload).stdout
        status, head, text = json.loads(out)
        return HttpResponse(status, head, text.encode())

    def get(self, path: str, timeout: float = 10) -> HttpResponse:
        return self.request("GET", path, timeout=timeout)

    def post_json(self, path: str, payload: object, headers: dict[str, str] | None = None):
        body = json.dumps(payload).encode()
        return self.request(
            "POST", path, body, {"Content-Type": "application/json", **(headers or {})}
        )

    def wait_until_serving(self, path: str = "/", seconds: float = 60) -> HttpResponse:
        deadline = time.monotonic() + seconds
        last: object = None
        while time.monotonic() < deadline:
            try:
                last = self.get(path, timeout=5)
                if last.status == 200:
                    return last
            except (OSError, urllib.error.URLError) as error:
                last = error
            time.sleep(0.5)
        raise AssertionError(f"GET {path} did not answer 200 within {seconds} s; last: {last}")

    def stream_events(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[list[float], list[Any], float]:
        """Read an SSE stream to its end: (arrival time of each event, the events, end time),
        in seconds from the request."""
        connection = self.https_connection()
        started = time.monotonic()
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        assert response.status == 200, response.read()
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        arrivals, events = [], []
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - started)
                events.append(json.loads(line[5:]))
        ended = time.monotonic() - started
        connection.close()
        return arrivals, events, ended

    def store_service(self) -> str:
        """The store's systemd unit on the VM: the redis role's choice for its release."""
        out = self.ssh(
            "systemctl list-unit-files --state=enabled --no-legend"
            " valkey-server.service redis-server.service"
        ).stdout.split()
        units = [word.removesuffix(".service") for word in out if word.endswith(".service")]
        assert len(units) == 1, f"not one store server enabled: {out}"
        return units[0]

    def release(self) -> str:
        """The Debian release the VM runs (trixie, bookworm)."""
        return self.ssh(". /etc/os-release && echo $VERSION_CODENAME").stdout.strip()

    def program_status(self) -> str:
        return self.ssh("supervisorctl status sample_app", check=False).stdout.strip()

    def wait_until_running(self, seconds: float = 30) -> str:
        """supervisor says STARTING until the program has stayed up for its startsecs."""
        deadline = time.monotonic() + seconds
        while " RUNNING " not in (status := self.program_status()):
            if time.monotonic() > deadline:
                raise AssertionError(f"not RUNNING after {seconds} s: {status}")
            time.sleep(0.5)
        return status

    def server_pids(self, server: str, pool: str = "app") -> list[int]:
        """Pids of every process of that app server on the VM (master and workers), of the
        request workers' program (pool "app") or the stream pool's ("streams"), which runs
        with a configuration file of its own (uwsgi-streams.ini, gunicorn-streams.conf.py)."""
        # "[u]wsgi" keeps pgrep from matching the shell that runs it.
        pattern = f"venv/bin/[{server[0]}]{server[1:]} "
        out = self.ssh(f"pgrep -af '{pattern}' || true").stdout
        return [
            int(line.split()[0])
            for line in out.splitlines()
            if line.strip() and ("-streams." in line) == (pool == "streams")
        ]

    def discovery(self, seconds: float = 30) -> dict[str, Any]:
        """``python -m wsgiprobe.discovery --json`` on the VM: server, master_pid, workers
        (index, pid). Asked again while it fails: a restarting server answers nowhere."""
        deadline = time.monotonic() + seconds
        while (proc := self.ssh(DISCOVERY, check=False)).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"no app server found after {seconds} s: {proc.stderr}")
            time.sleep(0.3)
        return json.loads(proc.stdout)

    def master_pid(self) -> int:
        return int(self.discovery()["master_pid"])

    def worker_pids(self) -> set[int]:
        """The app server's live workers, as the server itself lists them."""
        return {int(worker["pid"]) for worker in self.discovery()["workers"]}

    def wait_for_respawn(self, old: set[int], count: int, seconds: float = 30) -> set[int]:
        """The workers, once there are `count` again and not the `old` ones."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pids = self.worker_pids()
            if len(pids) == count and pids != old:
                return pids
            time.sleep(0.3)
        raise AssertionError(f"no respawned worker after {seconds} s")
