"""make targets run as a person runs them: make pdb in a pseudo-terminal, make profiler's tunnel."""

from __future__ import annotations

import base64
import os
import select
import signal
import socket
import subprocess
import time
import urllib.request

from stack import ROOT


def make_pdb(*args: str, session: list[tuple[str, str]], seconds: float = 60) -> tuple[int, str]:
    """`make pdb ARGS` in a pseudo-terminal, as a person runs it: after each expected text
    appears, type the line that goes with it. (exit status, everything the terminal showed)"""
    main, child = os.openpty()
    proc = subprocess.Popen(
        ["make", "-s", "pdb", *args],
        cwd=ROOT, stdin=child, stdout=child, stderr=child, start_new_session=True,
    )  # fmt: skip
    os.close(child)
    shown = b""
    since = 0  # each step looks for its text in what came after the previous line typed
    deadline = time.monotonic() + seconds
    steps = list(session)
    try:
        while time.monotonic() < deadline:
            if steps and steps[0][0].encode() in shown[since:]:
                since = len(shown)
                os.write(main, steps.pop(0)[1].encode() + b"\r")
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    data = os.read(main, 65536)
                except OSError:  # EIO: the terminal closed, make has exited
                    data = b""
                if not data:
                    break
                shown += data
            elif proc.poll() is not None:
                break
        rc = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc = -1
    finally:
        os.close(main)
    return rc, shown.decode("utf-8", "replace")


def basic_auth(password: str) -> dict[str, str]:
    token = base64.b64encode(f"admin:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def make_profiler(*args: str, password: str, seconds: float = 20) -> tuple[str, str]:
    """`make profiler ARGS` on a free local port, then Ctrl-C: (the page of every profile
    through its tunnel, everything make printed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tunnel = subprocess.Popen(
        ["make", "-s", "profiler", f"PROFILER_PORT={port}", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, preexec_fn=heed_ctrl_c,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/_profiler/showall"
    deadline = time.monotonic() + seconds
    try:
        while True:
            request = urllib.request.Request(url, headers=basic_auth(password))
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    page = response.read().decode()
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
    finally:
        output = interrupt(tunnel)
    assert url in output, output
    return page, output


def heed_ctrl_c() -> None:
    """In the child: SIGINT back to its default, which a shell's `cmd &` (the e2e lanes)
    leaves ignored for everything it starts."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(proc: subprocess.Popen[str], seconds: float = 20) -> str:
    """Ctrl-C, as a terminal sends it: SIGINT to the whole process group (make, the script and
    its ssh). Everything the command printed; fails, naming what still runs, if it goes on."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.communicate(timeout=seconds)[0]
    except subprocess.TimeoutExpired:
        left = subprocess.run(
            ["ps", "-o", "pid,stat,etime,args", "-s", str(proc.pid)],
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        os.killpg(proc.pid, signal.SIGKILL)
        output = proc.communicate()[0]
        raise AssertionError(
            f"Ctrl-C left this running after {seconds} s:\n{left}\nprinted:\n{output}"
        ) from None
