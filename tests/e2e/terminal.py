"""Commands run in a pseudo-terminal, as a person runs them (make pdb)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time

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
