"""Real locust runs, headless, against a sample_app server of the test's own on loopback.

The captchas live 2 s there, so that the negative scenario sees expiries within its run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "loadtests" / "run.py"
EXIT_THRESHOLDS = 3
APP = "sample_app.wsgi:app"

pytestmark = pytest.mark.skipif(
    not (importlib.util.find_spec("locust") and importlib.util.find_spec("gunicorn")),
    reason="needs locust and gunicorn in this venv (pip install -r requirements-dev.txt)",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, oracle secret) of a 2-worker gunicorn serving sample_app on loopback."""
    work = tmp_path_factory.mktemp("loadtests-server")
    oracle = secrets.token_urlsafe(16)
    port = _free_port()
    env = {
        **os.environ,
        "FLASK_SECRET_KEY": secrets.token_hex(16),
        "FLASK_CAPTCHA_ORACLE_SECRET": oracle,
        "FLASK_STORE_URL": f"sqlite:///{work / 'store.db'}",
        "FLASK_CAPTCHA_TTL": "2",
    }
    log = (work / "gunicorn.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", APP],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"the test server did not start:\n{(work / 'gunicorn.log').read_text()}"
                    )
                time.sleep(0.2)
        yield url, oracle
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run_locust(
    server: tuple[str, str], reports: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    url, oracle = server
    proc = subprocess.run(
        [sys.executable, str(RUN), "--host", url, "--reports-root", str(reports), *args],
        env={**os.environ, "CAPTCHA_ORACLE_SECRET": oracle, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    (report_dir,) = reports.iterdir()
    return proc, report_dir


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def test_flow_passes_the_thresholds_and_writes_reports(server, tmp_path: Path) -> None:
    proc, report = run_locust(
        server, tmp_path, "--users", "4", "--spawn-rate", "4", "--duration", "4s"
    )
    assert proc.returncode == 0, output(proc)
    assert report.name.endswith("-flow")
    assert "PASS:" in proc.stdout and "thresholds:" in proc.stdout
    html = (report / "report.html").read_text()
    assert "/api/captchas/[id]/image.png" in html
    stats = (report / "locust_stats.csv").read_text()
    assert "/api/captchas/[id]/verify" in stats and "Aggregated" in stats
    history = (report / "locust_stats_history.csv").read_text().splitlines()
    assert len(history) > 2 and any("/api/captchas/[id]/image.png" in row for row in history)
    summary = json.loads((report / "summary.json").read_text())
    assert summary["exit_code"] == 0 and summary["failures"] == 0
    assert summary["names"]["/api/captchas/[id]/verify"]["requests"] > 0
    # The CSV holds the final figures, the run's last second included.
    aggregated = next(row for row in stats.splitlines() if row.startswith(",Aggregated,"))
    assert int(aggregated.split(",")[2]) == summary["requests"]
    assert summary["host"] == server[0] and summary["users"] == 4
    # One stats row per endpoint, not per captcha id.
    assert all("[id]" in name or "/api/captchas/" not in name for name in summary["names"])
    assert not [c for c in summary["checks"] if c["status"] == "FAIL"]
    assert server[1] not in output(proc)  # the secret is never printed


def test_an_impossible_threshold_exits_3_and_names_it(server, tmp_path: Path) -> None:
    strict = tmp_path / "strict.toml"
    strict.write_text(
        "[default]\nmax_failure_ratio = 0.5\nmin_requests_per_s = 1000000\n"
        '[default.p95_ms]\n"/healthz" = 10000\n'
    )
    reports = tmp_path / "reports"
    proc, report = run_locust(
        server,
        reports,
        "--users", "2", "--spawn-rate", "2", "--duration", "3s",
        env={"LOCUST_THRESHOLDS": str(strict)},
    )  # fmt: skip
    assert proc.returncode == EXIT_THRESHOLDS, output(proc)
    assert f"thresholds: {strict}" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if "requests/s (all names)" in line)
    assert ">= 1e+06" in row and row.rstrip().endswith("FAIL")
    verdict = next(line for line in proc.stdout.splitlines() if "FAIL: 1 breached" in line)
    assert "(requests/s (all names))" in verdict and verdict.endswith("; exit 3")
    summary = json.loads((report / "summary.json").read_text())
    assert summary["exit_code"] == EXIT_THRESHOLDS and summary["failures"] == 0


def test_negative_cases_are_expected_outcomes(server, tmp_path: Path) -> None:
    proc, report = run_locust(
        server,
        tmp_path,
        "--scenario", "negative", "--users", "4", "--spawn-rate", "4", "--duration", "6s",
    )  # fmt: skip
    assert proc.returncode == 0, output(proc)
    summary = json.loads((report / "summary.json").read_text())
    assert summary["failures"] == 0
    names = summary["names"]
    for name in (
        "/api/captchas/[id]/verify [wrong answer]",
        "/api/captchas/[id]/verify [replay]",
        "/api/captchas/[id]/image.png [used]",
        "/api/captchas/[id]/verify [expired]",
        "/api/captchas/[id]/image.png [expired]",
    ):
        assert names[name]["requests"] > 0, name
        assert names[name]["failures"] == 0, name


def test_two_workers_add_up_on_the_master(server, tmp_path: Path) -> None:
    proc, report = run_locust(
        server,
        tmp_path,
        "--workers", "2", "--users", "4", "--spawn-rate", "4", "--duration", "4s",
    )  # fmt: skip
    assert proc.returncode == 0, output(proc)
    summary = json.loads((report / "summary.json").read_text())
    assert summary["workers"] == 2
    counts = [json.loads(p.read_text()) for p in (report / "workers").glob("*.json")]
    assert len(counts) == 2, list((report / "workers").iterdir())
    assert all(count["requests"] > 0 for count in counts)  # both workers sent load
    # The master's figures are the workers' sum: each worker counted its own requests.
    assert summary["requests"] == sum(count["requests"] for count in counts)
    assert summary["failures"] == sum(count["failures"] for count in counts) == 0
    assert (report / "report.html").is_file() and (report / "locust_stats.csv").is_file()


def test_a_run_without_the_oracle_secret_stops_at_once_with_exit_1(server) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CAPTCHA_ORACLE_SECRET"}
    started = time.monotonic()
    flow = str(ROOT / "loadtests/locustfiles/flow.py")
    args = ["--headless", "-H", server[0], "-u", "2", "-t", "30s", "--only-summary"]
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", flow, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 1, output(proc)
    assert time.monotonic() - started < 20  # not the whole 30 s
    assert "no oracle secret: set CAPTCHA_ORACLE_SECRET" in proc.stderr
    assert "ERROR: errors in the run" in proc.stdout


def start_in_background(
    server: tuple[str, str], reports: Path, preexec: Callable[[], object] | None = None
) -> tuple[subprocess.Popen[str], Path]:
    """A flow run of 5 min in its own process group, as a CI job or a script's `&` starts it,
    once its users send requests; and its log."""
    url, oracle = server
    log = reports / "run.log"
    reports.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, str(RUN), "--host", url, "--reports-root", str(reports / "out"),
         "--users", "2", "--spawn-rate", "2", "--duration", "5m"],
        env={**os.environ, "CAPTCHA_ORACLE_SECRET": oracle},
        stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
        start_new_session=True, preexec_fn=preexec,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while "/api/captchas/[id]/verify" not in log.read_text():  # a stats table with requests
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.5)
    return proc, log


def stopped_cleanly(proc: subprocess.Popen[str], log: Path, reports: Path) -> dict[str, Any]:
    """The summary of a run that stopped within 20 s: no escalation, every report written."""
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"the run did not stop within 20 s:\n{log.read_text()[-3000:]}")
    text = log.read_text()
    assert "still runs" not in text, text[-3000:]  # locust heard the first signal
    (report,) = (reports / "out").iterdir()
    # The verdict, whatever it is: a run this short may miss a threshold (exit 3).
    assert re.search(
        rf"^run: exit [03] \(.*\); reports in {re.escape(str(report))}$", text, re.M
    ), text[-3000:]
    assert (report / "report.html").is_file() and (report / "locust_stats.csv").is_file()
    summary = json.loads((report / "summary.json").read_text())
    assert summary["requests"] > 0 and summary["failures"] == 0
    return summary


def test_sigterm_stops_a_run_with_its_reports(server, tmp_path: Path) -> None:
    """How CI systems cancel a job, and how the e2e tests stop their background loads."""
    proc, log = start_in_background(server, tmp_path)
    proc.send_signal(signal.SIGTERM)  # to run.py alone: it stops locust
    stopped_cleanly(proc, log, tmp_path)
    assert "run: SIGTERM: stopping locust" in log.read_text()


def test_ctrl_c_stops_a_run_started_with_sigint_ignored(server, tmp_path: Path) -> None:
    """A background job of a non-interactive shell inherits SIGINT ignored; Ctrl+C (SIGINT to
    the process group) must stop it all the same."""
    proc, log = start_in_background(
        server, tmp_path, preexec=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)
    )
    os.killpg(proc.pid, signal.SIGINT)
    stopped_cleanly(proc, log, tmp_path)
