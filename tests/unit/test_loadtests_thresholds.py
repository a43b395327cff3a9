"""The load tests' pure parts: request names, the thresholds file, the verdict, exit codes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "loadtests" / "locustfiles"))

import loadcheck
from loadcheck import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_THRESHOLDS,
    NameSample,
    RunSample,
    ThresholdsError,
    evaluate,
    exit_code,
    group_name,
    parse_thresholds,
    verdict_table,
)

ROOT = Path(__file__).resolve().parents[2]
ID = "ZIAHBlPhpj_up62iZfrrdQ"


@pytest.mark.parametrize(
    ("url", "case", "name"),
    [
        (f"/api/captchas/{ID}/image.png", "", "/api/captchas/[id]/image.png"),
        (f"/api/captchas/{ID}/verify", "", "/api/captchas/[id]/verify"),
        (f"/api/captchas/{ID}/verify", "replay", "/api/captchas/[id]/verify [replay]"),
        (
            f"http://10.0.0.2:8080/api/captchas/{ID}/image.png?x=1",
            "",
            "/api/captchas/[id]/image.png",
        ),
        ("/api/captchas/not-an-id/oracle", "", "/api/captchas/[id]/oracle"),
        ("/api/captchas", "", "/api/captchas"),
        ("/healthz", "", "/healthz"),
        ("http://host", "", "/"),
    ],
)
def test_group_name_replaces_ids(url: str, case: str, name: str) -> None:
    assert group_name(url, case) == name


def test_two_ids_share_one_name() -> None:
    a = group_name(f"/api/captchas/{ID}/image.png")
    b = group_name("/api/captchas/AAAAAAAAAAAAAAAAAAAAAA/image.png")
    assert a == b


CONFIG = """
[default]
max_failure_ratio = 0.01
min_requests_per_s = 5

[default.p95_ms]
"/api/captchas" = 300
"/healthz" = 200

[scenario.negative]
min_requests_per_s = 2

[scenario.negative.p95_ms]
"/healthz" = 100
"/api/captchas/[id]/verify [replay]" = 50
"""


def test_default_table_applies_to_any_scenario() -> None:
    t = parse_thresholds(CONFIG, "flow")
    assert (t.max_failure_ratio, t.min_requests_per_s) == (0.01, 5.0)
    assert t.p95_ms == {"/api/captchas": 300.0, "/healthz": 200.0}
    assert t.scenario == "flow"


def test_scenario_table_overrides_key_by_key_and_adds_names() -> None:
    t = parse_thresholds(CONFIG, "negative")
    assert t.max_failure_ratio == 0.01  # kept from [default]
    assert t.min_requests_per_s == 2.0
    assert t.p95_ms == {
        "/api/captchas": 300.0,
        "/healthz": 100.0,
        "/api/captchas/[id]/verify [replay]": 50.0,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[default]\nmax_failure_rate = 0.1\n", "unknown key"),
        ("[defaults]\n", "unknown top-level"),
        ("[default]\nmax_failure_ratio = 2\n", "outside"),
        ("[default]\nmin_requests_per_s = -1\n", "outside"),
        ("[default]\nmin_requests_per_s = 'fast'\n", "expected a number"),
        ("[default]\nmin_requests_per_s = true\n", "expected a number"),
        ("[default]\np95_ms = 3\n", "expected a table"),
        ('[default.p95_ms]\n"/x" = -5\n', "outside"),
        ("[scenario.other]\nmax_failure = 1\n", "[scenario.other]"),  # any scenario is checked
        ("[default\n", "not valid TOML"),
    ],
)
def test_bad_files_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ThresholdsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_thresholds(text, "flow")


def test_missing_file_is_a_thresholds_error(tmp_path: Path) -> None:
    with pytest.raises(ThresholdsError, match="No such file"):
        loadcheck.load_thresholds(tmp_path / "nope.toml", "flow")


@pytest.mark.parametrize("scenario", ["flow", "negative", "all"])
def test_the_shipped_file_parses(scenario: str) -> None:
    t = loadcheck.load_thresholds(ROOT / "loadtests" / "thresholds.toml", scenario)
    assert t.max_failure_ratio is not None and t.min_requests_per_s is not None
    assert "/api/captchas/[id]/image.png" in t.p95_ms


def sample(times: dict[int, int], failures: int = 0) -> NameSample:
    return NameSample(sum(times.values()), failures, dict(times))


def test_percentile_follows_locusts_algorithm() -> None:
    # 100 requests: 90 at 10 ms, 5 at 20, 4 at 50, 1 at 900. Values checked against
    # locust.stats.calculate_response_time_percentile (locust 2.47).
    s = sample({10: 90, 20: 5, 50: 4, 900: 1})
    assert s.percentile(0.95) == 50
    assert s.percentile(0.99) == 900
    assert sample({10: 96, 400: 4}).percentile(0.95) == 10
    assert sample({10: 95, 400: 5}).percentile(0.95) == 400
    assert s.percentile(0.5) == 10
    assert s.percentile(1.0) == 900
    assert NameSample().percentile(0.95) == 0


def test_add_merges_methods_of_one_name() -> None:
    s = sample({10: 2})
    s.add(3, 1, {10: 1, 30: 2})
    assert (s.requests, s.failures, s.response_times) == (5, 1, {10: 3, 30: 2})


def run_sample(requests: int = 100, failures: int = 0, rps: float = 20.0) -> RunSample:
    return RunSample(
        requests,
        failures,
        rps,
        {"/api/captchas": sample({10: 96, 400: 4}), "/healthz": sample({3: 10})},
    )


def test_all_thresholds_met() -> None:
    checks = evaluate(parse_thresholds(CONFIG, "flow"), run_sample())
    assert [c.status for c in checks] == ["PASS"] * 4
    assert exit_code(checks, errors=False) == EXIT_OK


def test_breaches_are_named() -> None:
    t = parse_thresholds(CONFIG.replace('"/api/captchas" = 300', '"/api/captchas" = 5'), "flow")
    checks = evaluate(t, run_sample(failures=2, rps=4.0))
    failed = {c.label for c in checks if c.status == "FAIL"}
    assert failed == {"failure ratio", "requests/s (all names)", "p95 /api/captchas"}
    code = exit_code(checks, errors=False)
    assert code == EXIT_THRESHOLDS
    table = verdict_table(t, checks, code)
    assert "FAIL: 3 breached (failure ratio; requests/s (all names); p95 /api/captchas)" in table
    assert "exit 3" in table
    row = next(line for line in table.splitlines() if "p95 /api/captchas" in line)
    assert "<= 5 ms" in row and "10 ms" in row and row.endswith("FAIL")


def test_failure_ratio_at_the_limit_passes() -> None:
    checks = evaluate(parse_thresholds(CONFIG, "flow"), run_sample(requests=100, failures=1))
    assert checks[0].status == "PASS"
    assert checks[0].measured == "1.00% (1/100)"


def test_no_request_at_all_fails() -> None:
    t = parse_thresholds("[default]\nmax_failure_ratio = 0.5\n", "flow")
    checks = evaluate(t, RunSample(0, 0, 0.0))
    assert checks[0].status == "FAIL"


def test_a_name_never_requested_is_skipped_not_failed() -> None:
    t = parse_thresholds('[default.p95_ms]\n"/never" = 10\n', "flow")
    checks = evaluate(t, run_sample())
    assert [(c.status, c.measured) for c in checks] == [("SKIP", "no requests")]
    assert exit_code(checks, errors=False) == EXIT_OK
    assert "1 skipped (no requests)" in verdict_table(t, checks, EXIT_OK)


def test_errors_outrank_a_breach() -> None:
    t = parse_thresholds(CONFIG, "flow")
    checks = evaluate(t, run_sample(rps=0.1))
    assert exit_code(checks, errors=True) == EXIT_ERROR
    assert "ERROR" in verdict_table(t, checks, EXIT_ERROR)


def test_verdict_table_lists_limit_measured_and_verdict() -> None:
    t = parse_thresholds(CONFIG, "flow")
    table = verdict_table(t, evaluate(t, run_sample()), EXIT_OK)
    lines = table.splitlines()
    assert lines[0] == "thresholds: <string> (scenario flow)"
    assert lines[1].split() == ["threshold", "limit", "measured", "verdict"]
    assert any(line.split()[-1] == "PASS" and "requests/s" in line for line in lines)
    assert lines[-1].strip() == "PASS: 4 met; exit 0"
