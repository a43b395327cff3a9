"""The open-model gate (loadtests/openload.py) against the deployed VM, under each app server:
a stall of the app server shows in its tail and fails the gate, while locust, in the same
conditions, is run and its figures recorded beside it (printed at the end of the session).

The stall: SIGSTOP to the app server's process group (the master and its workers) for 1.5 s,
then SIGCONT. Stopping the master alone stalls nothing: uWSGI's and gunicorn's workers accept
connections themselves (measured: an open-model run's max stayed at 110 ms).
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from load import env, loadtest, output
from stack import FIGURES, ROOT, Stack

OPENLOAD = ROOT / "loadtests" / "openload.py"
OPEN_LINE = re.compile(r"^openload: exit (\d+) .*; reports in (\S+)$", re.M)
STALL_S = 1.5
RATE = 10  # flows/s: 30 requests/s, modest on a shared 2-core machine
SECONDS = 10
USERS = 10  # locust's flow users think 0.5-1.5 s: about RATE flows/s


def stall_after(stack: Stack, delay: float) -> threading.Thread:
    """In `delay` s: the app server's process group stopped for STALL_S, then continued."""

    def stall() -> None:
        time.sleep(delay)
        stack.ssh(
            "m=$(supervisorctl pid sample_app) && kill -STOP -- -$m"
            f" && sleep {STALL_S}; kill -CONT -- -$m"
        )

    thread = threading.Thread(target=stall, daemon=True)
    thread.start()
    return thread


def openload(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], dict]:
    """openload.py against the local VM; its exit code and summary.json."""
    proc = subprocess.run(
        [sys.executable, str(OPENLOAD), *args],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    match = OPEN_LINE.search(proc.stdout)
    assert match and int(match.group(1)) == proc.returncode, output(proc)
    return proc, json.loads((Path(match.group(2)) / "summary.json").read_text())


def locust_tail(report: Path) -> dict[str, str]:
    """The Aggregated row of locust's final stats: counts and percentiles (ms)."""
    with (report / "locust_stats.csv").open(newline="") as file:
        return next(row for row in csv.DictReader(file) if row["Name"] == "Aggregated")


def test_a_stall_shows_in_the_open_models_tail_and_locusts_is_beside_it(
    deployed: Stack, tmp_path: Path
) -> None:
    gate = tmp_path / "open.toml"
    gate.write_text(
        "[open]\nmax_failure_ratio = 0.01\nmax_send_lag_ms = 100\n[open.p999_ms]\nflow = 1000\n"
    )
    # openload starts sending ~1 s after its start: the stall falls ~3 s into its 10 s.
    stall = stall_after(deployed, 4)
    proc, result = openload(
        "--rate", str(RATE), "--duration", f"{SECONDS}s", "--thresholds", str(gate),
        "--reports-root", str(tmp_path / "open"),
    )  # fmt: skip
    stall.join()
    flow = result["names"]["flow"]["ms"]
    FIGURES.append(
        f"open model, {deployed.server}, {RATE} flows/s, {SECONDS} s, {STALL_S} s SIGSTOP:"
        f" {result['names']['flow']['count']} flows, p50 {flow['p50']:.0f} p90 {flow['p90']:.0f}"
        f" p99 {flow['p99']:.0f} p99.9 {flow['p99.9']:.0f} max {flow['max']:.0f} ms;"
        f" send lag p99 {result['send_lag_ms']['p99']:.1f} ms"
    )

    # locust, the same scenario at about the same rate, the same stall ~3 s into its load
    # (run.py starts locust, which starts its users: ~2 s).
    stall = stall_after(deployed, 5)
    no_failures = tmp_path / "no-failures.toml"
    no_failures.write_text("[default]\nmax_failure_ratio = 0.01\n")
    locust, report = loadtest(
        "--users", str(USERS), "--spawn-rate", str(USERS), "--duration", f"{SECONDS}s",
        "--tags", "load", "--thresholds", str(no_failures),
        "--reports-root", str(tmp_path / "locust"),
    )  # fmt: skip
    stall.join()
    tail = locust_tail(report)
    FIGURES.append(
        f"locust (closed loop), {deployed.server}, {USERS} users, same stall:"
        f" {tail['Request Count']} requests, p50 {tail['50%']} p90 {tail['90%']}"
        f" p99 {tail['99%']} p99.9 {tail['99.9%']} max {tail['100%']} ms"
    )
    print("\n".join(FIGURES[-2:]))

    # The open model: every arrival sent on schedule through the stall (the generator's check
    # passed: exit 3, not 1), and the stall in its tail, where the gate fails on it.
    assert proc.returncode == 3, output(proc)
    assert "  FAIL: 1 breached (p99.9 flow); exit 3" in proc.stdout, proc.stdout
    assert result["sent"] == result["scheduled"] == RATE * SECONDS, result
    assert result["failures"] == 0, result["failure_reasons"]
    assert flow["p99.9"] >= 1000, flow
    # The arrivals scheduled in the stall each waited from their schedule: a few % of all
    # flows waited 0.5 s or more (p90), not one per connection.
    assert flow["p90"] >= 300, flow
    assert max(second["slowest_ms"] for second in result["timeline"]) >= 1000
    # locust went through the same stall without failures; its figures are beside (FIGURES).
    assert locust.returncode == 0, output(locust)
    assert int(tail["Request Count"]) > 0 and int(tail["Failure Count"]) == 0
