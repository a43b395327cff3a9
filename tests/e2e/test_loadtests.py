"""The locust load tests against the deployed VM, under each app server: a smoke run passes its
thresholds and writes its reports, an impossible threshold fails the run and the verdict names
it, and two workers add up on the master.

Both servers: the three runs cost about a minute per server (30 s + 10 s + 10 s of load).
The runs take the oracle path, which the e2e deploy's short rate limits (conftest) would
otherwise stop: the smoke run creates many times the limit's budget without one failure.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import DEPLOY_VARS, RATE_WINDOW
from load import RUN, env, loadtest, output, report_dir, summary
from stack import LOG_DIR, ROOT, Stack, secret

EXIT_THRESHOLDS = 3
# Every request name of the flow scenario (tag smoke runs all its tasks).
FLOW_NAMES = (
    "/api/captchas",
    "/api/captchas/[id]/image.png",
    "/api/captchas/[id]/verify",
    "/healthz",
    "/openapi.json",
)


def create_budget(seconds: float) -> int:
    """Most creates the e2e deploy's rate limit lets one client make in that many seconds."""
    count, window = DEPLOY_VARS["app_environment"]["FLASK_RATE_LIMIT_CREATE"].split("/")
    assert int(window) == RATE_WINDOW
    return int(count) * (int(seconds // RATE_WINDOW) + 1)


def test_make_loadtest_smoke_run_passes_and_writes_its_reports(deployed: Stack) -> None:
    # `make loadtest` as a user runs it: the VM of LOCALVM_NAME by default, its oracle secret.
    proc = subprocess.run(
        ["make", "-s", "loadtest", "DURATION=30s", "TAGS=smoke"],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    _, report = report_dir(proc)
    kept = LOG_DIR / f"loadtest-smoke-{deployed.server}"
    shutil.rmtree(kept, ignore_errors=True)
    shutil.move(report, kept)  # beside the deploy logs, out of the checkout
    assert proc.returncode == 0, output(proc)
    # Over https, the certificate verified against the config's CA (make -s tls-ca).
    assert f"against https://{deployed.address};" in proc.stdout
    ca = ROOT / "configs/local/.secrets/tls-ca/ca.crt"
    assert f"run: the users verify its certificate against {ca}" in proc.stdout
    assert re.search(r"^  PASS: \d+ met; exit 0$", proc.stdout, re.M), proc.stdout
    assert secret("oracle_secret") not in output(proc)

    result = summary(kept)
    assert (result["scenario"], result["enforced"], result["exit_code"]) == ("flow", True, 0)
    assert result["requests"] > 0 and result["failures"] == 0, result
    for name in FLOW_NAMES:
        assert result["names"][name]["requests"] > 0, name
        assert result["names"][name]["failures"] == 0, name
    assert sum(n["requests"] for n in result["names"].values()) == result["requests"]
    # One row per endpoint, not per captcha id.
    assert set(result["names"]) == set(FLOW_NAMES), sorted(result["names"])
    assert {c["status"] for c in result["checks"]} == {"PASS"}, result["checks"]
    # The oracle lifted the rate limit: far more creates than its budget, none refused.
    assert result["names"]["/api/captchas"]["requests"] > 2 * create_budget(30), result

    stats = (kept / "locust_stats.csv").read_text().splitlines()
    assert stats[0].startswith("Type,Name,Request Count,Failure Count")
    rows = {row.split(",")[1]: row.split(",") for row in stats[1:]}
    assert set(rows) == {*FLOW_NAMES, "Aggregated"}
    assert int(rows["Aggregated"][2]) == result["requests"]
    history = (kept / "locust_stats_history.csv").read_text().splitlines()
    assert len(history) > 20  # a row per second and name, over 30 s
    failures = (kept / "locust_failures.csv").read_text().splitlines()
    assert len(failures) == 1, failures  # the header alone
    html = (kept / "report.html").read_text()
    assert all(name in html for name in FLOW_NAMES)


def thresholds(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_an_impossible_threshold_exits_3_and_the_verdict_names_it(
    deployed: Stack, tmp_path: Path
) -> None:
    # No p95 limit here: a 10 s run's p95 moves with the machine's load, this test must not.
    strict = thresholds(
        tmp_path, "impossible", "[default]\nmax_failure_ratio = 0.01\nmin_requests_per_s = 1e6\n"
    )
    proc, report = loadtest(
        "--thresholds", str(strict), "--tags", "smoke", "--duration", "10s",
        "--reports-root", str(tmp_path / "reports"),
    )  # fmt: skip
    assert proc.returncode == EXIT_THRESHOLDS, output(proc)
    lines = proc.stdout.splitlines()
    assert f"thresholds: {strict} (scenario flow)" in lines
    row = next(line for line in lines if "requests/s (all names)" in line)
    assert ">= 1e+06" in row and row.rstrip().endswith("FAIL"), row
    failures = next(line for line in lines if line.startswith("  failure ratio "))
    assert failures.rstrip().endswith("PASS"), failures  # only the impossible one failed
    assert "  FAIL: 1 breached (requests/s (all names)); exit 3" in lines, proc.stdout
    result = summary(report)
    assert result["exit_code"] == EXIT_THRESHOLDS
    assert result["requests"] > 0 and result["failures"] == 0
    failed = [c["label"] for c in result["checks"] if c["status"] == "FAIL"]
    assert failed == ["requests/s (all names)"]
    assert (report / "report.html").is_file()


def test_two_workers_report_the_sum_of_both(deployed: Stack, tmp_path: Path) -> None:
    # Failures only: this test is about the sum; latencies are the smoke run's business.
    no_failures = thresholds(tmp_path, "no-failures", "[default]\nmax_failure_ratio = 0\n")
    proc, report = loadtest(
        "--workers", "2", "--users", "6", "--spawn-rate", "6", "--duration", "10s",
        "--thresholds", str(no_failures), "--reports-root", str(tmp_path / "reports"),
    )  # fmt: skip
    assert proc.returncode == 0, output(proc)
    result = summary(report)
    assert result["workers"] == 2
    counts = [json.loads(p.read_text()) for p in sorted((report / "workers").glob("*.json"))]
    assert len(counts) == 2, sorted(p.name for p in (report / "workers").iterdir())
    assert all(count["requests"] > 0 for count in counts), counts  # both sent load
    # The master's total is the sum of what each worker counted itself.
    assert result["requests"] == sum(count["requests"] for count in counts), (result, counts)
    assert result["failures"] == sum(count["failures"] for count in counts) == 0
    for n in (1, 2):
        assert (report / "workers" / f"worker-{n}.log").is_file()
    assert {c["status"] for c in result["checks"]} == {"PASS"}, result["checks"]


def test_make_tls_ca_names_the_ca_the_runs_trust_and_another_ca_is_refused(
    deployed: Stack, tmp_path: Path
) -> None:
    shown = subprocess.run(
        ["make", "-s", "tls-ca"], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=30
    )
    ca = ROOT / "configs/local/.secrets/tls-ca/ca.crt"
    assert (shown.returncode, shown.stdout) == (0, f"{ca}\n"), output(shown)
    # A CA that did not sign the VM's certificate: refused before any load, with the reason.
    other = tmp_path / "other-ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", "/CN=another CA", "-days", "1", "-keyout", str(tmp_path / "k"),
         "-out", str(other)],
        check=True, capture_output=True,
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(RUN), "--host", f"https://{deployed.address}", "--ca-file",
         str(other), "--duration", "5s", "--reports-root", str(tmp_path / "reports")],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, output(proc)
    assert f"the certificate does not verify against {other}" in proc.stderr, output(proc)
    assert not (tmp_path / "reports").exists()  # no run began
