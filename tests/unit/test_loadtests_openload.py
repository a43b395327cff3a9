"""The open-model gate (loadtests/openload.py): arrivals on schedule whatever the server does,
latencies from the scheduled time, the generator's own check, the [open] thresholds and the
verdict; runs against servers of the test's own on loopback (no VM)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest
from test_loadtests_live import server  # noqa: F401 (a fixture: sample_app on loopback)
from test_loadtests_target import tls_server  # noqa: F401 (a fixture: https on loopback)

from loadtests_import import load

openload = load("openload")
loadcheck = openload.loadcheck

ROOT = Path(__file__).resolve().parents[2]


def run_scenario(scenario, rate: float, seconds: float, limit: int = 64, drain_s: float = 5):
    """generate() with a scenario of the test's own (no HTTP): the recorder and the start."""

    async def main():
        recorder = openload.Recorder()
        client = openload.Client("http://127.0.0.1:9", None, limit, timeout=5)
        offsets = openload.schedule(rate, seconds)
        start = await openload.generate(scenario, client, recorder, offsets, drain_s=drain_s)
        return recorder, start

    return asyncio.run(main())


def test_the_schedule_is_evenly_spaced_at_the_rate() -> None:
    assert openload.schedule(4, 1) == [0, 0.25, 0.5, 0.75]
    assert len(openload.schedule(20, 30)) == 600
    assert openload.schedule(0.5, 1) == [0]  # at least one arrival
    with pytest.raises(ValueError):
        openload.schedule(0, 10)


def test_arrivals_are_sent_on_schedule_while_earlier_ones_are_still_waiting() -> None:
    # Every arrival waits 0.5 s: a closed loop of a few users would fall to a few per second.
    started: list[float] = []

    async def slow(session, _secret):
        started.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.5)
        session.recorder.record("slow", asyncio.get_running_loop().time() - session.due)

    recorder, start = run_scenario(slow, rate=50, seconds=1)
    assert recorder.sent == 50 and len(started) == 50
    lateness = [t - (start + i / 50) for i, t in enumerate(started)]
    assert max(lateness) < 0.1, lateness  # 25 arrivals in flight at once, none held back
    assert recorder.waited_for_connection == 0
    assert recorder.histograms["slow"].get_total_count() == 50
    assert recorder.percentiles("slow")["p50"] == pytest.approx(500, abs=60)


def test_a_stall_counts_from_the_scheduled_time_for_every_arrival_it_held() -> None:
    # The "server" answers nothing from 0.3 s to 0.8 s after the start, then all at once.
    gate: dict[str, float] = {}

    async def stalled(session, _secret):
        loop = asyncio.get_running_loop()
        reopen = gate.setdefault("start", session.due) + 0.8
        if session.due >= gate["start"] + 0.3 and loop.time() < reopen:
            await asyncio.sleep(reopen - loop.time())
        session.recorder.record("req", loop.time() - session.due)

    recorder, _ = run_scenario(stalled, rate=100, seconds=2)
    hist = recorder.histograms["req"]
    # ~50 arrivals were scheduled in the stall: each waited from its schedule to its end
    # (0.5 s down to 0), so ~20 of them over 0.3 s; a closed loop would have sent few of them.
    slow = hist.get_total_count() - hist.get_count_at_value(0)
    over_300ms = sum(1 for v in _values(hist) if v >= 300_000)
    assert 15 <= over_300ms <= 25, over_300ms
    assert slow >= over_300ms
    assert recorder.percentiles("req")["max"] == pytest.approx(500, abs=60)
    assert recorder.percentiles("req")["p90"] >= 250


def _values(hist) -> list[int]:
    out = []
    for item in hist.get_recorded_iterator():
        out += [item.value_iterated_to] * item.count_added_in_this_iter_step
    return out


def test_a_busy_generator_shows_as_send_lag_and_the_run_exits_1() -> None:
    async def hog(session, _secret):
        time.sleep(0.05)  # blocks the event loop: the generator itself falls behind
        session.recorder.record("req", asyncio.get_running_loop().time() - session.due)

    recorder, _ = run_scenario(hog, rate=100, seconds=0.5)
    run = recorder.open_run()
    assert run.send_lag_p99_ms > 100
    thresholds = loadcheck.parse_open_thresholds("[open]\nmax_send_lag_ms = 50\n", "light")
    checks = loadcheck.evaluate_open(thresholds, run)
    assert [(c.label, c.status) for c in checks] == [(loadcheck.SEND_LAG_LABEL, "FAIL")]
    assert loadcheck.open_exit_code(checks) == loadcheck.EXIT_ERROR


def test_arrivals_that_find_no_free_connection_wait_and_are_counted() -> None:
    async def slow(session, _secret):
        await asyncio.sleep(0.2)
        session.recorder.record("req", asyncio.get_running_loop().time() - session.due)

    recorder, _ = run_scenario(slow, rate=20, seconds=1, limit=1)
    assert recorder.waited_for_connection > 10
    assert recorder.open_run().send_lag_p99_ms > 1000  # 20 arrivals through one at 5/s


# --- thresholds ------------------------------------------------------------------------------


def test_the_repo_thresholds_have_open_tables_for_both_scenarios() -> None:
    path = ROOT / "loadtests" / "thresholds.toml"
    for scenario in openload.SCENARIOS:
        t = loadcheck.load_open_thresholds(path, scenario)
        assert t.max_failure_ratio is not None and t.max_send_lag_ms is not None
    flow = loadcheck.load_open_thresholds(path, "flow")
    assert "flow" in flow.latency_ms["p99_ms"] and "flow" in flow.latency_ms["p999_ms"]
    # The locust gate still reads the same file.
    assert loadcheck.load_thresholds(path, "flow").p95_ms


def test_open_scenario_tables_override_key_by_key_and_name_by_name() -> None:
    text = """
[default]
max_failure_ratio = 0.5
[open]
max_failure_ratio = 0.01
max_send_lag_ms = 50
[open.p99_ms]
"flow" = 1000
"/healthz" = 300
[open.scenario.light]
max_send_lag_ms = 20
[open.scenario.light.p99_ms]
"/healthz" = 100
[open.scenario.light.max_ms]
"/healthz" = 2000
"""
    light = loadcheck.parse_open_thresholds(text, "light")
    assert (light.max_failure_ratio, light.max_send_lag_ms) == (0.01, 20)
    assert light.latency_ms == {
        "p99_ms": {"flow": 1000, "/healthz": 100},
        "max_ms": {"/healthz": 2000},
    }
    flow = loadcheck.parse_open_thresholds(text, "flow")
    assert flow.max_send_lag_ms == 50 and flow.latency_ms == {
        "p99_ms": {"flow": 1000, "/healthz": 300}
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[open]\np95_ms = {}\n", "unknown key(s) ['p95_ms']"),
        ("[open]\nmax_failure_ratio = 2\n", "outside"),
        ("[open.p999_ms]\nflow = 'slow'\n", "expected a number"),
        ("[open.scenario.light]\nmax_lag = 1\n", "[open.scenario.light]: unknown key"),
        ("open = 3\n", "[open] must be a table"),
    ],
)
def test_a_bad_open_table_stops_both_gates(text: str, error: str) -> None:
    for parse in (loadcheck.parse_thresholds, loadcheck.parse_open_thresholds):
        with pytest.raises(loadcheck.ThresholdsError, match=None) as caught:
            parse(text, "flow")
        assert error in str(caught.value)


def test_the_verdict_passes_fails_and_skips_by_percentile_and_name() -> None:
    thresholds = loadcheck.parse_open_thresholds(
        "[open]\nmax_failure_ratio = 0.01\nmax_send_lag_ms = 50\n"
        '[open.p999_ms]\nflow = 1000\n"/healthz" = 100\n[open.max_ms]\nflow = 5000\n',
        "flow",
    )
    figures = {"p50": 20.0, "p90": 30.0, "p99": 800.0, "p99.9": 1500.0, "max": 1600.0}
    run = loadcheck.OpenRun(requests=300, failures=0, send_lag_p99_ms=2.0, names={"flow": figures})
    checks = loadcheck.evaluate_open(thresholds, run)
    assert [(c.label, c.status) for c in checks] == [
        (loadcheck.SEND_LAG_LABEL, "PASS"),
        ("failure ratio", "PASS"),
        ("p99.9 flow", "FAIL"),
        ("p99.9 /healthz", "SKIP"),
        ("max flow", "PASS"),
    ]
    code = loadcheck.open_exit_code(checks)
    assert code == loadcheck.EXIT_THRESHOLDS
    table = loadcheck.verdict_table(thresholds, checks, code)
    assert "  FAIL: 1 breached (p99.9 flow), 1 skipped (no requests); exit 3" in table
    assert "1500.0 ms" in table


# --- whole runs on loopback ------------------------------------------------------------------


def run_main(tmp_path: Path, *args: str, thresholds: str | None = None) -> tuple[int, dict]:
    path = tmp_path / "thresholds.toml"
    path.write_text(thresholds or (ROOT / "loadtests" / "thresholds.toml").read_text())
    code = openload.main(
        [*args, "--thresholds", str(path), "--reports-root", str(tmp_path / "reports")]
    )
    (report,) = (tmp_path / "reports").iterdir()
    return code, json.loads((report / "summary.json").read_text())


def test_the_flow_against_sample_app_passes_and_reports(
    server: tuple[str, str],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, oracle = server
    monkeypatch.setenv("CAPTCHA_ORACLE_SECRET", oracle)
    loose = "[open]\nmax_failure_ratio = 0\n[open.p99_ms]\nflow = 60000\n"
    code, result = run_main(
        tmp_path, "--host", url, "--rate", "10", "--duration", "2", thresholds=loose
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert (result["scheduled"], result["sent"], result["failures"]) == (20, 20, 0)
    assert result["requests"] == 60  # 3 requests a flow
    names = result["names"]
    assert set(names) == {
        "flow", "/api/captchas", "/api/captchas/[id]/image.png", "/api/captchas/[id]/verify",
    }  # fmt: skip
    assert all(names[n]["count"] == 20 for n in names)
    assert names["flow"]["ms"]["max"] >= names["/api/captchas"]["ms"]["max"]
    assert names["flow"]["hdr"]  # the histogram itself, HDR-encoded
    assert "rate: scheduled 10/s" in out and "PASS: 2 met; exit 0" in out
    assert oracle not in out and oracle not in json.dumps(result)


def test_a_breach_exits_3(
    server: tuple[str, str],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = server
    impossible = '[open.p50_ms]\n"/healthz" = 0\n'
    code, result = run_main(
        tmp_path, "--host", url, "--scenario", "light", "--rate", "20", "--duration", "1",
        thresholds=impossible,
    )  # fmt: skip
    assert code == loadcheck.EXIT_THRESHOLDS
    assert result["exit_code"] == 3 and result["names"]["/healthz"]["count"] == 20
    assert "FAIL: 1 breached (p50 /healthz); exit 3" in capsys.readouterr().out


def test_https_is_verified_against_the_given_ca_only(
    tls_server: tuple[str, Path],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, ca = tls_server
    monkeypatch.delenv("LOADTEST_CA_FILE", raising=False)
    code, result = run_main(
        tmp_path, "--host", url, "--ca-file", str(ca), "--scenario", "light", "--rate", "20",
        "--duration", "1", thresholds="[open]\nmax_failure_ratio = 0\n",
    )  # fmt: skip
    assert code == 0 and result["names"]["/healthz"]["count"] == 20
    assert f"certificate verified against {ca}" in capsys.readouterr().out
    # Without the CA (the system's store): refused before any load, exit 2.
    assert openload.main(["--host", url, "--scenario", "light", "--duration", "1"]) == 2
    assert "does not verify" in capsys.readouterr().err


def test_a_server_that_never_answers_is_failures_by_timeout_not_lost_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Connections complete in the kernel's backlog; nothing ever reads the requests.
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(16)
        code, result = run_main(
            tmp_path, "--host", f"http://127.0.0.1:{mute.getsockname()[1]}",
            "--scenario", "light", "--rate", "4", "--duration", "1", "--timeout", "0.5",
            thresholds="[open]\nmax_failure_ratio = 0\n",
        )  # fmt: skip
    assert code == loadcheck.EXIT_THRESHOLDS
    assert (result["sent"], result["requests"], result["failures"]) == (4, 4, 4)
    assert result["failure_reasons"] == {"/healthz: timeout": 4}
    assert "FAIL: 1 breached (failure ratio); exit 3" in capsys.readouterr().out
