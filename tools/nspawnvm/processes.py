"""The VM's processes: the systemd-nspawn command that boots it, finding its nspawn and its
container's init in /proc (by command line and root directory, so a lost or stale state file
does not matter), waiting on them, and stopping them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Network
from pathlib import Path
from typing import TypeVar

from .config import Machine, VMState
from .errors import LocalVMError, say
from .host import tail, tool_env

STOP_TIMEOUT = float(os.environ.get("LOCALVM_STOP_TIMEOUT", "30"))
T = TypeVar("T")


def nspawn_command(machine: Machine, binds: Sequence[tuple[Path, str]] = ()) -> list[str]:
    # No host system bus here: --register=no --keep-unit keep nspawn from asking machined/systemd.
    # On a bridge the container still sees host0; the host end (vb-NAME) joins the bridge.
    network = f"--network-bridge={machine.bridge}" if machine.bridge else "--network-veth"
    return [
        "systemd-nspawn",
        "-D",
        str(machine.rootfs),
        "-b",
        "--register=no",
        "--keep-unit",
        network,
        "-M",
        machine.name,
        "--console=passive",
        "--resolv-conf=off",
        "--link-journal=no",
        *(f"--bind={host}:{inside}" for host, inside in binds),
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


def recorded_vms(state_root: Path) -> list[tuple[VMState, bool]]:
    """Every VM with a readable state file under state_root, and whether it runs."""
    found = []
    for state_file in sorted(state_root.glob("*/state.json")):
        with contextlib.suppress(OSError, ValueError, LocalVMError):
            state = VMState.from_json(state_file.read_text())
            machine = Machine(state_file.parent.name, IPv4Network(state.subnet), state_root)
            found.append((state, vm_running(machine)))
    return found


def boot(machine: Machine, binds: Sequence[tuple[Path, str]] = ()) -> int:
    with machine.console_log.open("ab") as log:
        log.write(f"\n==== localvm: boot at {time.ctime()} ====\n".encode())
        log.flush()
        # Own session: the VM must outlive this command and the shell that started it.
        proc = subprocess.Popen(
            nspawn_command(machine, binds),
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
