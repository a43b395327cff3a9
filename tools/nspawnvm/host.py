"""Running programs on the host: a PATH with sbin and the C locale, subprocess calls that
fail with one readable error, long commands logged to a file, locks between concurrent runs,
and the precondition check (Linux, root, the required tools).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import LocalVMError, PreconditionError, say

SANE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REQUIRED_TOOLS = ("systemd-nspawn", "debootstrap", "iptables", "ip", "ssh", "ssh-keygen", "chroot")


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
