"""The load tests' runner (loadtests/run.py) as the end-to-end tests drive it: a run to its end,
or a load in the background while a test redeploys or breaks something."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack import LOG_DIR, ROOT

RUN = ROOT / "loadtests" / "run.py"
REPORT_LINE = re.compile(r"^run: exit (\d+) .*; reports in (\S+)$", re.M)


def env() -> dict[str, str]:
    """This shell's environment without anything that would change the run's defaults: the
    target and secret are then the VM's, as `make loadtest` finds them."""
    drop = {
        "CAPTCHA_ORACLE_SECRET",
        "CAPTCHA_ORACLE_SECRET_FILE",
        "LOCUST_THRESHOLDS",
        "LOADTEST_CA_FILE",
    }
    return {k: v for k, v in os.environ.items() if k not in drop}


def loadtest(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], Path]:
    """run.py against the local VM (its address and oracle secret found by run.py itself)."""
    proc = subprocess.run(
        [sys.executable, str(RUN), *args],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    code, report = report_dir(proc)
    assert code == proc.returncode, output(proc)
    return proc, report


def report_dir(proc: subprocess.CompletedProcess[str]) -> tuple[int, Path]:
    """run.py's last line: the exit code it returned and the run's report folder."""
    match = REPORT_LINE.search(proc.stdout)
    assert match, f"no 'reports in' line:\n{output(proc)}"
    return int(match.group(1)), Path(match.group(2))


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def summary(report: Path) -> dict:
    return json.loads((report / "summary.json").read_text())


@dataclass
class LoadResult:
    label: str
    summary: dict[str, Any]
    report: Path

    @property
    def requests(self) -> int:
        return int(self.summary["requests"])

    @property
    def failures(self) -> int:
        return int(self.summary["failures"])

    def failures_of(self, name: str) -> int:
        return int(self.summary["names"].get(name, {}).get("failures", 0))

    def failure_rows(self) -> list[dict[str, str]]:
        """locust's failures table: Method, Name, Error, Occurrences, ..."""
        with (self.report / "locust_failures.csv").open(newline="") as file:
            return list(csv.DictReader(file))

    def failure_messages(self) -> str:
        """The failures table, for assertion messages."""
        return (self.report / "locust_failures.csv").read_text()

    def line(self) -> str:
        return f"{self.label}: {self.requests} requests sent, {self.failures} failed"


# Every load of the session, printed at the end of the run (conftest).
LOADS: list[LoadResult] = []


class BackgroundLoad:
    """The flow scenario against the VM until stopped; use as a context manager:

    with BackgroundLoad("redeploy uwsgi") as load:
        stack.deploy(...)
    assert load.result.failures == 0
    """

    def __init__(
        self, label: str, users: int = 6, warm_seconds: float = 4.0, args: Sequence[str] = ()
    ) -> None:
        """args: more options of run.py (--host, --oracle-secret-file for another target)."""
        self.label = label
        self.users = users
        self.warm_seconds = warm_seconds
        self.args = list(args)
        slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
        self.root = LOG_DIR / "loads" / f"{len(LOADS):02d}-{slug}"
        self.proc: subprocess.Popen[str] | None = None
        self.result: LoadResult | None = None

    def __enter__(self) -> BackgroundLoad:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = (self.root / "run.log").open("w")
        args = [
            sys.executable, str(RUN), "--scenario", "flow", "--users", str(self.users),
            "--spawn-rate", str(self.users), "--duration", "30m", "--reports-root", str(self.root),
            *self.args,
        ]  # fmt: skip
        # Its own process group, so that nothing of it outlives the test (SIGKILL below).
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env(), stdout=self.log, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
        time.sleep(self.warm_seconds)  # every user started and in its loop
        assert self.proc.poll() is None, f"the load stopped at once: {self.root / 'run.log'}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        if self.result is not None:
            return self.result
        assert self.proc is not None
        # As a CI system cancels a job: run.py stops locust, which writes its reports.
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()
        output = (self.root / "run.log").read_text()
        match = REPORT_LINE.search(output)
        assert match, f"the load wrote no report line:\n{output[-3000:]}"
        report = Path(match.group(2))
        summary = json.loads((report / "summary.json").read_text())
        self.result = LoadResult(self.label, summary, report)
        LOADS.append(self.result)
        return self.result
