#!/usr/bin/env python3
"""Manage a local Debian 12 "VM": a systemd-nspawn container booted with systemd as PID 1.

The VM gets its own IPv4 address on a veth pair (host side ve-NAME), reaches the outside through
NAT on the host, and is reached by SSH with its own key pair and a pinned host key. It stands in
for the Vagrant VM on Linux hosts: the Ansible roles deploy onto it as onto any Debian host.

    localvm.py [--name NAME] [--subnet CIDR] {up,stop,destroy,status,address,ssh-config,ssh}

Everything except `address` and `ssh-config` needs root on Linux with systemd-nspawn,
debootstrap and iptables. Progress goes to stderr, prefixed `localvm:`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TypeVar

DEFAULT_NAME = "flaskvm"
DEFAULT_SUBNET = "10.231.0.0/24"
DEFAULT_CACHE = "/var/cache/localvm/bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
STATE_ROOT = Path("/var/lib/localvm")
LOCK_ROOT = Path("/run/localvm")
SUITE = "bookworm"
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "sudo",
    "iproute2",
    "ca-certificates",
)
# Bump when the base recipe changes so that existing caches are rebuilt.
BASE_FORMAT = 1
# nspawn derives the host interface name ve-NAME from the machine name and truncates it to the
# kernel's 15 characters: a short name keeps the interface name predictable.
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,10}$")
SANE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REQUIRED_TOOLS = ("systemd-nspawn", "debootstrap", "iptables", "ip", "ssh", "ssh-keygen", "chroot")
# Sorts before the image's 80-container-host0.network (DHCP): networkd uses the first match.
NETWORK_FILE = "etc/systemd/network/10-host0.network"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
BOOT_TIMEOUT = float(os.environ.get("LOCALVM_BOOT_TIMEOUT", "120"))
STOP_TIMEOUT = float(os.environ.get("LOCALVM_STOP_TIMEOUT", "30"))
T = TypeVar("T")
ROUTE_TYPES = frozenset(
    {"unicast", "local", "broadcast", "multicast", "throw", "unreachable", "prohibit", "blackhole"}
    | {"nat", "anycast"}
)


class LocalVMError(Exception):
    """An expected failure: reported as one `localvm: error:` line, without a traceback."""


class PreconditionError(LocalVMError):
    """The host cannot run the VM at all (exit status 2)."""


def say(message: str) -> None:
    print(f"localvm: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Pure logic: names, addresses, parsing and rendering (unit tested)
# ---------------------------------------------------------------------------------------------


def validate_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise LocalVMError(
            f"invalid VM name {name!r}: use 1-11 characters, a-z, 0-9 and '-', "
            "starting with a letter (the host interface ve-NAME must fit in 15 characters)"
        )
    return name


def parse_subnet(text: str) -> IPv4Network:
    try:
        subnet = IPv4Network(text, strict=True)
    except ValueError as exc:
        raise LocalVMError(f"invalid subnet {text!r}: {exc}") from None
    if subnet.prefixlen > 30:
        raise LocalVMError(
            f"subnet {subnet} is too small: it needs room for two hosts (/30 or larger)"
        )
    if not subnet.is_private or subnet.is_loopback or subnet.is_link_local:
        raise LocalVMError(f"subnet {subnet} must be a private range such as {DEFAULT_SUBNET}")
    return subnet


def derive_addresses(subnet: IPv4Network) -> tuple[IPv4Address, IPv4Address]:
    """The host side takes the first host address of the subnet, the VM the second."""
    return subnet.network_address + 1, subnet.network_address + 2


@dataclass(frozen=True)
class Machine:
    name: str
    subnet: IPv4Network
    state_root: Path = STATE_ROOT

    @property
    def host_address(self) -> IPv4Address:
        return derive_addresses(self.subnet)[0]

    @property
    def vm_address(self) -> IPv4Address:
        return derive_addresses(self.subnet)[1]

    @property
    def iface(self) -> str:
        return f"ve-{self.name}"

    @property
    def nat_comment(self) -> str:
        return f"localvm:{self.name}"

    @property
    def dir(self) -> Path:
        return self.state_root / self.name

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"


@dataclass
class VMState:
    name: str
    nspawn_pid: int
    container_pid1: int | None
    subnet: str
    host_address: str
    vm_address: str
    iface: str
    forwarding_was: str
    nat_rule: list[str]
    started_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> VMState:
        try:
            data = json.loads(text)
            state = cls(**{f.name: data[f.name] for f in fields(cls)})
        except (ValueError, KeyError, TypeError) as exc:
            raise LocalVMError(f"unreadable state: {exc!r}") from None
        if not isinstance(state.nspawn_pid, int) or not isinstance(state.nat_rule, list):
            raise LocalVMError("unreadable state: wrong field types")
        return state


def write_state(path: Path, state: VMState) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.to_json())
    os.replace(tmp, path)


def read_state(path: Path) -> VMState | None:
    """The recorded state, or None if there is none; a corrupt file is reported and ignored."""
    try:
        return VMState.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except LocalVMError as exc:
        say(f"ignoring {path}: {exc}")
        return None


def machine_status(nspawn_alive: bool, rootfs_exists: bool) -> str:
    if nspawn_alive:
        return "running"
    return "stopped" if rootfs_exists else "absent"


def has_stale_state(state: VMState | None, nspawn_alive: bool) -> bool:
    """A state file without a live nspawn means the VM died under us (e.g. its session ended)."""
    return state is not None and not nspawn_alive


def up_action(nspawn_alive: bool, init_alive: bool, ssh_ok: bool) -> str:
    """What `up` does given the VM's processes: reuse, repair (host side), restart or boot."""
    if (nspawn_alive or init_alive) and ssh_ok:
        return "reuse"
    if nspawn_alive:
        return "repair"  # still booting, or its host side was lost
    if init_alive:
        return "restart"  # orphaned and unreachable: nothing supervises it any more
    return "boot"


def should_disable_forwarding(
    state: VMState | None, marker_exists: bool, others_running: bool
) -> bool:
    """Turn ip_forward back off only if localvm turned it on and no other VM still needs it.

    The marker file survives across VMs: if VM a turned forwarding on and VM b came up after it,
    b saw "1", yet the last of them to go must still restore "0".
    """
    if others_running:
        return False
    return marker_exists or (state is not None and state.forwarding_was == "0")


def parse_routes(text: str) -> list[tuple[IPv4Network, str | None]]:
    """(destination, device) pairs from `ip -4 route show table all`; default routes skipped."""
    routes = []
    for line in text.splitlines():
        tokens = line.split()
        if tokens and tokens[0] in ROUTE_TYPES:
            tokens = tokens[1:]
        if not tokens or tokens[0] == "default":
            continue
        try:
            dest = IPv4Network(tokens[0], strict=False)
        except ValueError:
            continue
        dev = tokens[tokens.index("dev") + 1] if "dev" in tokens[:-1] else None
        routes.append((dest, dev))
    return routes


def parse_resolvers(text: str) -> list[IPv4Address]:
    resolvers = []
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) >= 2 and tokens[0] == "nameserver":
            with contextlib.suppress(ValueError):
                resolvers.append(IPv4Address(tokens[1]))
    return resolvers


def subnet_conflicts(
    subnet: IPv4Network,
    routes: Sequence[tuple[IPv4Network, str | None]],
    resolvers: Sequence[IPv4Address],
    own_iface: str,
) -> list[str]:
    """Why `subnet` would shadow part of the host's network (our own ve-NAME excepted)."""
    reported: list[tuple[IPv4Network, str | None]] = []
    # Widest first, so that the local-table /32s of an interface already named are not repeated.
    for dest, dev in sorted(routes, key=lambda route: route[0].prefixlen):
        if dev == own_iface or not dest.overlaps(subnet):
            continue
        if not any(dev == seen_dev and dest.subnet_of(seen) for seen, seen_dev in reported):
            reported.append((dest, dev))
    problems = [f"route {dest}" + (f" dev {dev}" if dev else "") for dest, dev in reported]
    problems += [f"DNS resolver {addr}" for addr in resolvers if addr in subnet]
    return problems


def nat_rule_spec(machine: Machine) -> list[str]:
    # fmt: off
    return [
        "POSTROUTING", "-s", str(machine.subnet), "!", "-o", machine.iface,
        "-m", "comment", "--comment", machine.nat_comment, "-j", "MASQUERADE",
    ]
    # fmt: on


def iptables_nat(action: str, spec: Sequence[str]) -> list[str]:
    # -w: wait for the xtables lock instead of failing when another tool holds it.
    return ["iptables", "-w", "5", "-t", "nat", action, *spec]


def rules_with_comment(iptables_s_output: str, comment: str) -> list[list[str]]:
    """Rule specs (for -D) carrying exactly our comment, from `iptables -t nat -S POSTROUTING`.

    Matching on the comment rather than the subnet also finds rules left from a run with
    another --subnet.
    """
    found = []
    for line in iptables_s_output.splitlines():
        tokens = shlex.split(line)
        if len(tokens) < 2 or tokens[0] != "-A":
            continue
        comments = [tokens[i + 1] for i, tok in enumerate(tokens[:-1]) if tok == "--comment"]
        if comment in comments:
            found.append(tokens[1:])
    return found


def nspawn_command(machine: Machine) -> list[str]:
    # No host system bus here: --register=no --keep-unit keep nspawn from asking machined/systemd.
    return [
        "systemd-nspawn",
        "-D",
        str(machine.rootfs),
        "-b",
        "--register=no",
        "--keep-unit",
        "--network-veth",
        "-M",
        machine.name,
        "--console=passive",
        "--resolv-conf=off",
        "--link-journal=no",
    ]


def is_nspawn_for(argv: Sequence[str], rootfs: Path) -> bool:
    """Whether a command line is a systemd-nspawn running this rootfs (guards against pid reuse)."""
    if not argv or os.path.basename(argv[0]) != "systemd-nspawn":
        return False
    wanted = str(rootfs)
    for i, arg in enumerate(argv[:-1]):
        if arg in ("-D", "--directory") and argv[i + 1] == wanted:
            return True
    return f"--directory={wanted}" in argv


def parse_nspid(status_text: str) -> list[int]:
    """The NSpid line of /proc/PID/status: the pid in each nested PID namespace, outermost first."""
    for line in status_text.splitlines():
        if line.startswith("NSpid:"):
            return [int(tok) for tok in line.split()[1:]]
    return []


def is_namespace_init(nspid: Sequence[int]) -> bool:
    return len(nspid) >= 2 and nspid[-1] == 1


def parse_children(text: str) -> list[int]:
    return [int(tok) for tok in text.split()]


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


def render_network_config(machine: Machine) -> str:
    return (
        "[Match]\n"
        "Name=host0\n"
        "\n"
        "[Network]\n"
        f"Address={machine.vm_address}/{machine.subnet.prefixlen}\n"
        f"Gateway={machine.host_address}\n"
        "LinkLocalAddressing=no\n"
        "IPv6AcceptRA=no\n"
    )


def render_apt_sources(mirror: str) -> str:
    return (
        f"deb {mirror} {SUITE} main\n"
        f"deb {mirror} {SUITE}-updates main\n"
        f"deb {SECURITY_MIRROR} {SUITE}-security main\n"
    )


def render_hosts(name: str) -> str:
    return (
        "127.0.0.1\tlocalhost\n"
        f"127.0.1.1\t{name}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
    )


def unescape_mount_path(field: str) -> str:
    # /proc/self/mounts escapes space, tab, newline and backslash as octal (\040 ...).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(mounts_text: str, path: Path) -> list[str]:
    prefix = str(path).rstrip("/")
    found = []
    for line in mounts_text.splitlines():
        tokens = line.split()
        if len(tokens) < 2:
            continue
        mount_point = unescape_mount_path(tokens[1])
        if mount_point == prefix or mount_point.startswith(prefix + "/"):
            found.append(mount_point)
    return found


def base_recipe() -> dict[str, object]:
    return {"format": BASE_FORMAT, "suite": SUITE, "variant": "minbase", "packages": BASE_PACKAGES}


def base_is_complete(marker_text: str | None) -> bool:
    if marker_text is None:
        return False
    try:
        recorded = json.loads(marker_text)
    except ValueError:
        return False
    expected = json.loads(json.dumps(base_recipe()))  # tuples become lists, as in the file
    return isinstance(recorded, dict) and recorded.get("recipe") == expected


def missing_tools(which: dict[str, str | None]) -> list[str]:
    return [tool for tool, path in which.items() if path is None]


def precondition_problem(platform: str, euid: int, missing: Sequence[str]) -> str | None:
    if platform.startswith("linux") and euid == 0 and not missing:
        return None
    detail = f" (missing: {', '.join(missing)})" if missing else ""
    if not platform.startswith("linux"):
        detail = f" (this is {platform})"
    elif euid != 0 and not missing:
        detail = " (not running as root)"
    return (
        "needs root on Linux with systemd-nspawn, debootstrap and iptables"
        f"{detail}; on other machines use the Vagrantfile: vagrant up"
    )


# ---------------------------------------------------------------------------------------------
# Host interaction
# ---------------------------------------------------------------------------------------------


def tool_env() -> dict[str, str]:
    # sbin must be on PATH (sudo and some shells drop it); C locale keeps `ip` output parseable.
    env = dict(os.environ)
    env["PATH"] = f"{SANE_PATH}:{env.get('PATH', '')}"
    env["LC_ALL"] = "C"
    return env


def run(
    cmd: Sequence[str], *, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(cmd),
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=tool_env(),
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise LocalVMError(f"command not found: {cmd[0]}") from None
    except subprocess.TimeoutExpired:
        raise LocalVMError(f"command timed out after {timeout:.0f} s: {shlex.join(cmd)}") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise LocalVMError(f"command failed (exit {proc.returncode}): {shlex.join(cmd)}\n{detail}")
    return proc


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_logged(cmd: Sequence[str], log: Path, label: str, timeout: float) -> None:
    """Run a long command with its output in a log file and a progress line every 15 s."""
    start = time.monotonic()
    with log.open("ab") as out:
        try:
            proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=tool_env(),
            )
        except FileNotFoundError:
            raise LocalVMError(f"command not found: {cmd[0]}") from None
        while True:
            try:
                rc = proc.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - start
                if elapsed > timeout:
                    proc.kill()
                    proc.wait()
                    raise LocalVMError(
                        f"{label} timed out after {elapsed:.0f} s (log: {log})"
                    ) from None
                say(f"{label}: still running ({elapsed:.0f} s)...")
    if rc != 0:
        raise LocalVMError(
            f"command failed (exit {rc}): {shlex.join(cmd)}\nlast lines of {log}:\n{tail(log)}"
        )


def check_preconditions() -> None:
    which = {tool: shutil.which(tool, path=tool_env()["PATH"]) for tool in REQUIRED_TOOLS}
    problem = precondition_problem(sys.platform, os.geteuid(), missing_tools(which))
    if problem:
        raise PreconditionError(problem)


@contextlib.contextmanager
def file_lock(path: Path, what: str) -> Iterator[None]:
    """Serialise runs on one VM (or one cache build) across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another localvm run on {what}...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def read_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def process_alive(pid: int) -> bool:
    """Alive and not a zombie (PID 1 here may not reap the nspawn processes it inherits)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def nspawn_processes() -> list[tuple[int, list[str]]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            argv = read_cmdline(int(entry.name))
            if argv and os.path.basename(argv[0]) == "systemd-nspawn":
                found.append((int(entry.name), argv))
    return found


def nspawn_pids(machine: Machine) -> list[int]:
    # Found by command line rather than by the recorded pid: works with a lost or stale state file.
    return [
        pid
        for pid, argv in nspawn_processes()
        if is_nspawn_for(argv, machine.rootfs) and process_alive(pid)
    ]


def namespace_init_pids() -> list[int]:
    """Live processes that are PID 1 of a PID namespace below ours (containers' inits)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        if is_namespace_init(parse_nspid(status)) and process_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def same_file(a: str | Path, b: str | Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def container_init_pids(machine: Machine) -> list[int]:
    """The VM's systemd, found by its root directory.

    A SIGKILLed nspawn leaves its container running (orphaned, veth and all); this finds it
    whether or not its nspawn is still there.
    """
    if not machine.rootfs.exists():
        return []
    return [pid for pid in namespace_init_pids() if same_file(f"/proc/{pid}/root", machine.rootfs)]


def vm_running(machine: Machine) -> bool:
    return bool(nspawn_pids(machine) or container_init_pids(machine))


def other_vms_running(machine: Machine) -> bool:
    """Whether another container may rely on ip_forward: any other nspawn, or another localvm
    VM whose recorded init still runs without its nspawn."""
    if any(
        not is_nspawn_for(argv, machine.rootfs) and process_alive(pid)
        for pid, argv in nspawn_processes()
    ):
        return True
    inits = set(namespace_init_pids())
    for state_file in machine.state_root.glob("*/state.json"):
        if state_file.parent.name == machine.name:
            continue
        with contextlib.suppress(OSError, LocalVMError):
            other = VMState.from_json(state_file.read_text())
            if other.container_pid1 in inits:
                return True
    return False


def link_exists(iface: str) -> bool:
    return Path("/sys/class/net", iface).exists()


def forwarding_marker(machine: Machine) -> Path:
    return machine.state_root / ".ip_forward-enabled-by-localvm"


def enable_forwarding(machine: Machine) -> str:
    was = IP_FORWARD.read_text().strip()
    if was != "1":
        say("enabling net.ipv4.ip_forward (restored when the last VM goes)")
        IP_FORWARD.write_text("1\n")
        forwarding_marker(machine).write_text(f"{machine.name}\n")
    return was


def restore_forwarding(machine: Machine, state: VMState | None) -> None:
    marker = forwarding_marker(machine)
    if should_disable_forwarding(state, marker.exists(), other_vms_running(machine)):
        say("restoring net.ipv4.ip_forward=0")
        IP_FORWARD.write_text("0\n")
        marker.unlink(missing_ok=True)


def ensure_nat_rule(machine: Machine) -> list[str]:
    spec = nat_rule_spec(machine)
    if run(iptables_nat("-C", spec), check=False).returncode != 0:
        run(iptables_nat("-A", spec))
    return spec


def remove_nat_rules(machine: Machine) -> None:
    listing = run(iptables_nat("-S", ["POSTROUTING"])).stdout
    for spec in rules_with_comment(listing, machine.nat_comment):
        say(f"removing NAT rule {shlex.join(spec)}")
        run(iptables_nat("-D", spec))


def check_subnet_free(machine: Machine) -> None:
    routes = parse_routes(run(["ip", "-4", "route", "show", "table", "all"]).stdout)
    try:
        resolv = Path("/etc/resolv.conf").read_text()
    except OSError:
        resolv = ""
    problems = subnet_conflicts(machine.subnet, routes, parse_resolvers(resolv), machine.iface)
    if problems:
        raise LocalVMError(
            f"subnet {machine.subnet} collides with the host's network ({'; '.join(problems)}): "
            "pick another one with --subnet or LOCALVM_SUBNET"
        )


def clean_host_side(machine: Machine, state: VMState | None) -> None:
    """Undo what `up` did on the host; safe to repeat and safe after the VM died on its own."""
    remove_nat_rules(machine)
    if link_exists(machine.iface):
        prefix = machine.subnet.prefixlen
        address = state.host_address if state else str(machine.host_address)
        if state:
            prefix = IPv4Network(state.subnet).prefixlen
        run(["ip", "addr", "del", f"{address}/{prefix}", "dev", machine.iface], check=False)
    restore_forwarding(machine, state)
    machine.state_file.unlink(missing_ok=True)


def stop_container(machine: Machine) -> bool:
    """Power the VM off cleanly, then SIGKILL whatever is left after the timeout.

    SIGTERM to nspawn makes it ask the container to power off; an orphaned container (nspawn
    gone) gets SIGRTMIN+4 directly, systemd's own poweroff request.
    """
    nspawns, inits = nspawn_pids(machine), container_init_pids(machine)
    if nspawns:
        polite = {pid: signal.SIGTERM for pid in nspawns}
    else:
        polite = {pid: signal.SIGRTMIN + 4 for pid in inits}
    targets = set(nspawns) | set(inits)
    if not targets:
        return False
    say(f"stopping {machine.name} (pid {', '.join(map(str, sorted(targets)))})...")
    for pid, sig in polite.items():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    if wait_for_exit(targets, STOP_TIMEOUT):
        return True
    say(f"{machine.name} did not power off within {STOP_TIMEOUT:.0f} s: killing it")
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if wait_for_exit(targets, 10):
        return True
    raise LocalVMError(f"could not stop pid(s) {sorted(targets)}")


def wait_for_exit(pids: set[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(process_alive(pid) for pid in pids):
            return True
        time.sleep(0.2)
    return False


# ---------------------------------------------------------------------------------------------
# Root file systems
# ---------------------------------------------------------------------------------------------


def path_in_rootfs(rootfs: Path, relative: str) -> Path:
    """A path inside rootfs whose parent directory cannot lead out of it through symlinks."""
    target = rootfs / relative.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(rootfs.resolve()):
        raise LocalVMError(f"{relative} leads outside of {rootfs}")
    return target


def write_into(rootfs: Path, relative: str, text: str, mode: int = 0o644) -> None:
    target = path_in_rootfs(rootfs, relative)
    # A symlink here (e.g. resolv.conf -> /run/...) would make us write to the host's file.
    if target.is_symlink():
        target.unlink()
    target.write_text(text)
    target.chmod(mode)


def chroot_run(rootfs: Path, *cmd: str) -> None:
    run(["chroot", str(rootfs), *cmd])


def remove_tree(path: Path) -> None:
    mounts = mounts_under(Path("/proc/self/mounts").read_text(), path)
    if mounts:
        raise LocalVMError(f"refusing to delete {path}: still mounted: {', '.join(mounts)}")
    run(["rm", "-rf", "--one-file-system", str(path)], timeout=600)


def build_base(rootfs: Path, mirror: str, log: Path) -> None:
    cmd = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        SUITE,
        str(rootfs),
        mirror,
    ]
    say(f"building the {SUITE} base image with debootstrap (once; about a minute)...")
    run_logged(cmd, log, "debootstrap", timeout=1800)
    # Generic to every VM, so done once here: networkd (the address must survive a reboot of the
    # VM), apt sources, and no SSH host keys (each VM gets its own).
    chroot_run(rootfs, "systemctl", "enable", "systemd-networkd")
    write_into(rootfs, "etc/apt/sources.list", render_apt_sources(mirror))
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    chroot_run(rootfs, "apt-get", "clean")


def ensure_base(cache: Path, mirror: str) -> Path:
    """The base rootfs, built once into a temp dir and renamed into place when complete."""
    marker = cache / "base.json"
    with file_lock(cache.parent / f".{cache.name}.lock", f"the base image {cache}"):
        with contextlib.suppress(OSError):
            if base_is_complete(marker.read_text()):
                return cache / "rootfs"
        for leftover in cache.parent.glob(f".{cache.name}.tmp-*"):
            say(f"removing an unfinished build: {leftover}")
            remove_tree(leftover)
        tmp = cache.parent / f".{cache.name}.tmp-{os.getpid()}"
        (tmp / "rootfs").mkdir(parents=True)
        build_base(tmp / "rootfs", mirror, tmp / "debootstrap.log")
        recipe = {"recipe": base_recipe(), "mirror": mirror, "built_at": time.time()}
        (tmp / "base.json").write_text(json.dumps(recipe, indent=2) + "\n")
        if cache.exists():
            outdated = cache.parent / f".{cache.name}.tmp-old-{os.getpid()}"
            os.rename(cache, outdated)
            remove_tree(outdated)
        os.rename(tmp, cache)
        return cache / "rootfs"


def ensure_client_key(machine: Machine) -> str:
    if not machine.key.exists():
        comment, key = machine.nat_comment, str(machine.key)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", key])
    return machine.key.with_suffix(".pub").read_text().strip()


def authorize_key(rootfs: Path, pubkey: str) -> None:
    ssh_dir = path_in_rootfs(rootfs, "root/.ssh/authorized_keys").parent
    ssh_dir.chmod(0o700)
    keys_file = ssh_dir / "authorized_keys"
    existing = keys_file.read_text() if keys_file.exists() else ""
    if pubkey not in existing.splitlines():
        write_into(rootfs, "root/.ssh/authorized_keys", existing + pubkey + "\n", 0o600)


def install_host_cas(rootfs: Path) -> None:
    """Trust the host's extra CAs (e.g. an egress proxy's), or HTTPS to PyPI fails in the VM."""
    certs = sorted(HOST_CA_DIR.rglob("*.crt")) if HOST_CA_DIR.is_dir() else []
    for cert in certs:
        relative = cert.relative_to(HOST_CA_DIR)
        target = path_in_rootfs(rootfs, f"usr/local/share/ca-certificates/{relative}")
        shutil.copyfile(cert, target)
    if certs:
        chroot_run(rootfs, "update-ca-certificates")


def personalise_rootfs(machine: Machine, rootfs: Path) -> None:
    """One-time identity of a new VM: hostname, machine id, SSH host keys, trusted CAs."""
    write_into(rootfs, "etc/hostname", f"{machine.name}\n")
    write_into(rootfs, "etc/hosts", render_hosts(machine.name))
    # The base image's machine id would be shared by every VM made from it.
    write_into(rootfs, "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    dbus_id = path_in_rootfs(rootfs, "var/lib/dbus/machine-id")
    dbus_id.unlink(missing_ok=True)
    dbus_id.symlink_to("/etc/machine-id")
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    chroot_run(rootfs, "ssh-keygen", "-A")
    install_host_cas(rootfs)


def configure_for_boot(machine: Machine) -> None:
    """Settings redone at every boot: the subnet or the host's resolver may have changed."""
    write_into(machine.rootfs, NETWORK_FILE, render_network_config(machine))
    write_into(machine.rootfs, "etc/resolv.conf", Path("/etc/resolv.conf").read_text())
    authorize_key(machine.rootfs, ensure_client_key(machine))
    host_key = (machine.rootfs / "etc/ssh/ssh_host_ed25519_key.pub").read_text()
    machine.known_hosts.write_text(known_hosts_line(machine.vm_address, host_key))
    machine.ssh_config.write_text(
        render_ssh_config(machine.name, machine.vm_address, machine.key, machine.known_hosts)
    )


def create_rootfs(machine: Machine, cache: Path, mirror: str) -> None:
    base = ensure_base(cache, mirror)
    tmp = machine.dir / "rootfs.tmp"
    if tmp.exists():
        remove_tree(tmp)
    say(f"copying the base image to {machine.rootfs}...")
    run(["cp", "-a", "--reflink=auto", str(base), str(tmp)], timeout=900)
    personalise_rootfs(machine, tmp)
    os.rename(tmp, machine.rootfs)


# ---------------------------------------------------------------------------------------------
# Boot and SSH
# ---------------------------------------------------------------------------------------------


def boot(machine: Machine) -> int:
    with machine.console_log.open("ab") as log:
        log.write(f"\n==== localvm: boot at {time.ctime()} ====\n".encode())
        log.flush()
        # Own session: the VM must outlive this command and the shell that started it.
        proc = subprocess.Popen(
            nspawn_command(machine),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=tool_env(),
        )
    return proc.pid


def wait_until(what: str, check: Callable[[], T], timeout: float, machine: Machine, pid: int) -> T:
    """Poll check() until it returns something truthy; fail early if nspawn died."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if not process_alive(pid):
            raise LocalVMError(
                f"systemd-nspawn exited while waiting for {what}; last lines of "
                f"{machine.console_log}:\n{tail(machine.console_log)}"
            )
        if time.monotonic() > deadline:
            raise LocalVMError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def container_pid1(nspawn_pid: int) -> int | None:
    for children in Path(f"/proc/{nspawn_pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            pids = parse_children(children.read_text())
            if pids:
                return pids[0]
    return None


def set_up_host_side(machine: Machine) -> None:
    # The veth is recreated at each boot, so its host address is too.
    prefix = machine.subnet.prefixlen
    run(["ip", "addr", "replace", f"{machine.host_address}/{prefix}", "dev", machine.iface])
    run(["ip", "link", "set", machine.iface, "up"])


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


def start_vm(machine: Machine) -> VMState:
    say(f"booting {machine.name} (console log: {machine.console_log})...")
    pid = boot(machine)
    state = VMState(
        name=machine.name,
        nspawn_pid=pid,
        container_pid1=None,
        subnet=str(machine.subnet),
        host_address=str(machine.host_address),
        vm_address=str(machine.vm_address),
        iface=machine.iface,
        forwarding_was=IP_FORWARD.read_text().strip(),
        nat_rule=[],
        started_at=time.time(),
    )
    # Recorded at once, so that a failure below still leaves something for stop/destroy.
    write_state(machine.state_file, state)
    state.container_pid1 = wait_until(
        "the container's init", lambda: container_pid1(pid), 15, machine, pid
    )
    wait_until(f"interface {machine.iface}", lambda: link_exists(machine.iface), 15, machine, pid)
    set_up_host_side(machine)
    state.forwarding_was = enable_forwarding(machine)
    state.nat_rule = ensure_nat_rule(machine)
    write_state(machine.state_file, state)
    return state


def print_summary(machine: Machine, started: float) -> None:
    print(f"name:    {machine.name}")
    print(f"address: {machine.vm_address}")
    print(f"ssh:     ssh -F {machine.ssh_config} {machine.name}")
    print(f"took:    {time.monotonic() - started:.1f} s")


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def cmd_up(machine: Machine, args: argparse.Namespace) -> int:
    started = time.monotonic()
    state = read_state(machine.state_file)
    nspawns, inits = nspawn_pids(machine), container_init_pids(machine)
    if (nspawns or inits) and state and state.subnet != str(machine.subnet):
        raise LocalVMError(
            f"{machine.name} is running on {state.subnet}, not {machine.subnet}: "
            "stop it first to change its subnet"
        )
    action = up_action(bool(nspawns), bool(inits), bool(nspawns or inits) and ssh_works(machine))
    if action == "reuse":
        orphan = "" if nspawns else " (its systemd-nspawn process is gone; stop still works)"
        say(f"{machine.name} is already running and reachable{orphan}")
        print_summary(machine, started)
        return 0
    if action == "repair":
        say(f"{machine.name} is running but not reachable yet: setting up the host side again")
        set_up_host_side(machine)
        enable_forwarding(machine)
        ensure_nat_rule(machine)
        wait_for_ssh(machine, nspawns[0])
        print_summary(machine, started)
        return 0
    if action == "restart":
        say(f"{machine.name} lost its systemd-nspawn process and is unreachable: restarting it")
        stop_container(machine)
    elif has_stale_state(state, nspawn_alive=False):
        say(f"{machine.name} is gone but left host state behind: cleaning it up")
    clean_host_side(machine, state)
    check_subnet_free(machine)
    machine.dir.mkdir(parents=True, exist_ok=True)
    machine.dir.chmod(0o700)
    if not machine.rootfs.exists():
        create_rootfs(machine, Path(args.cache), args.mirror)
    configure_for_boot(machine)
    state = start_vm(machine)
    wait_for_ssh(machine, state.nspawn_pid)
    say(f"{machine.name} is up")
    print_summary(machine, started)
    return 0


def cmd_stop(machine: Machine, _args: argparse.Namespace) -> int:
    state = read_state(machine.state_file)
    if not stop_container(machine):
        say(f"{machine.name} is not running")
    clean_host_side(machine, state)
    return 0


def cmd_destroy(machine: Machine, args: argparse.Namespace) -> int:
    state = read_state(machine.state_file)
    stop_container(machine)
    clean_host_side(machine, state)
    if not machine.dir.exists():
        say(f"no VM named {machine.name}: nothing to destroy")
        return 0
    say(f"deleting {machine.dir}...")
    remove_tree(machine.dir)
    say(f"{machine.name} destroyed (the base image in {args.cache} is kept)")
    return 0


def cmd_status(machine: Machine, _args: argparse.Namespace) -> int:
    status = machine_status(vm_running(machine), machine.rootfs.exists())
    print(status)
    return 0 if status == "running" else 1


def cmd_address(machine: Machine, _args: argparse.Namespace) -> int:
    print(machine.vm_address)
    return 0


def cmd_ssh_config(machine: Machine, _args: argparse.Namespace) -> int:
    print(machine.ssh_config)
    return 0


def cmd_ssh(machine: Machine, args: argparse.Namespace) -> int:
    if not vm_running(machine) or not machine.ssh_config.exists():
        raise LocalVMError(f"{machine.name} is not running: run `localvm.py up` first")
    remote = list(args.remote)
    if remote[:1] == ["--"]:
        remote = remote[1:]
    cmd = ssh_command(machine, *remote)
    os.execvpe(cmd[0], cmd, tool_env())


COMMANDS = {
    "up": cmd_up,
    "stop": cmd_stop,
    "destroy": cmd_destroy,
    "status": cmd_status,
    "address": cmd_address,
    "ssh-config": cmd_ssh_config,
    "ssh": cmd_ssh,
}
NEEDS_NOTHING = frozenset({"address", "ssh-config"})
# Commands that change host state take the per-VM lock.
LOCKED = frozenset({"up", "stop", "destroy"})


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--name",
        default=env.get("LOCALVM_NAME", DEFAULT_NAME),
        help="VM name (env LOCALVM_NAME, default %(default)s)",
    )
    common.add_argument(
        "--subnet",
        default=env.get("LOCALVM_SUBNET", DEFAULT_SUBNET),
        help="VM subnet (env LOCALVM_SUBNET, default %(default)s)",
    )
    # The same options after the command too, without overriding the ones given before it.
    late = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    late.add_argument("--name")
    late.add_argument("--subnet")
    parser = argparse.ArgumentParser(
        prog="localvm.py", parents=[common], description=__doc__.split("\n\n")[0]
    )
    parser.set_defaults(
        cache=env.get("LOCALVM_CACHE", DEFAULT_CACHE),
        mirror=env.get("LOCALVM_MIRROR", DEFAULT_MIRROR),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        "up": "create or start the VM and wait until SSH works",
        "stop": "power the VM off, keeping its disk",
        "destroy": "stop the VM and delete it (the base image cache is kept)",
        "status": "print running/stopped/absent (exit 0 only if running)",
        "address": "print the VM's IPv4 address",
        "ssh-config": "print the path of the VM's ssh_config",
        "ssh": "ssh into the VM: ssh [-- CMD...]",
    }
    for command, text in helps.items():
        p = sub.add_parser(command, parents=[late], help=text, description=text)
        if command == "ssh":
            p.add_argument("remote", nargs=argparse.REMAINDER, help="command to run in the VM")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        machine = Machine(validate_name(args.name), parse_subnet(args.subnet))
        if args.command not in NEEDS_NOTHING:
            check_preconditions()
        handler = COMMANDS[args.command]
        if args.command in LOCKED:
            with file_lock(LOCK_ROOT / f"{machine.name}.lock", machine.name):
                return handler(machine, args)
        return handler(machine, args)
    except PreconditionError as exc:
        print(f"localvm: {exc}", file=sys.stderr)
        return 2
    except LocalVMError as exc:
        print(f"localvm: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"localvm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("localvm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
