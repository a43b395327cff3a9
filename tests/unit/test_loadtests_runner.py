"""loadtests/run.py: the locust command lines it builds, and what it refuses before starting."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loadtests_import import ROOT, load

run = load("run")
HOST = "http://127.0.0.1:8000"


def plan(*argv: str, port: int | None = None):
    args = run.parse_args(list(argv))
    return run.build_plan(args, HOST, Path("/r/20260101-000000-flow"), port)


def option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_scenarios_are_the_locustfiles_without_the_shared_modules() -> None:
    assert set(run.scenarios()) == {"flow", "negative"}
    assert run.locustfiles("all").split(",") == [
        str(ROOT / "loadtests/locustfiles/flow.py"),
        str(ROOT / "loadtests/locustfiles/negative.py"),
    ]
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        run.locustfiles("nope")


def test_single_process_headless_run_with_reports() -> None:
    p = plan("--users", "3", "--spawn-rate", "1.5", "--duration", "20s", "--tags", "smoke")
    cmd = p.master
    assert cmd[:3] == [sys.executable, "-m", "locust"]
    assert option(cmd, "--config") == str(ROOT / "loadtests/locust.conf")
    assert option(cmd, "-f") == str(ROOT / "loadtests/locustfiles/flow.py")
    assert option(cmd, "--host") == HOST
    assert (option(cmd, "--users"), option(cmd, "--spawn-rate")) == ("3", "1.5")
    assert option(cmd, "--run-time") == "20s"
    assert option(cmd, "--tags") == "smoke"
    assert "--headless" in cmd
    assert option(cmd, "--html") == "/r/20260101-000000-flow/report.html"
    assert option(cmd, "--csv") == "/r/20260101-000000-flow/locust"
    assert "--csv-full-history" in cmd
    assert option(cmd, "--report-dir") == "/r/20260101-000000-flow"
    assert option(cmd, "--scenario") == "flow"
    assert option(cmd, "--thresholds") == str(ROOT / "loadtests/thresholds.toml")
    assert "--master" not in cmd and p.workers == []


def test_unset_options_are_left_to_locust_conf() -> None:
    cmd = plan().master
    for name in ("--users", "--spawn-rate", "--run-time", "--tags", "--oracle-secret-file"):
        assert name not in cmd


def test_tags_comma_separated_or_repeated() -> None:
    cmd = plan("--tags", "smoke,load", "--exclude-tags", "negative").master
    i = cmd.index("--tags")
    assert cmd[i + 1 : i + 3] == ["smoke", "load"]
    assert option(cmd, "--exclude-tags") == "negative"


def test_workers_run_locusts_distributed_mode_on_loopback() -> None:
    p = plan("--workers", "2", port=47001)
    cmd = p.master
    assert "--master" in cmd
    assert option(cmd, "--master-bind-host") == "127.0.0.1"
    assert option(cmd, "--master-bind-port") == "47001"
    assert option(cmd, "--expect-workers") == "2"
    assert option(cmd, "--expect-workers-max-wait") == "60"
    assert len(p.workers) == 2
    for n, worker in enumerate(p.workers, 1):
        assert "--worker" in worker and "--headless" not in worker
        assert option(worker, "--master-host") == "127.0.0.1"
        assert option(worker, "--master-port") == "47001"
        assert option(worker, "-f") == option(cmd, "-f")
        assert option(worker, "--logfile") == f"/r/20260101-000000-flow/workers/worker-{n}.log"


def test_remote_workers_listen_on_every_address_and_are_waited_for() -> None:
    p = plan("--workers", "1", "--remote-workers", "3")
    cmd = p.master
    assert option(cmd, "--master-bind-host") == "0.0.0.0"
    assert option(cmd, "--master-bind-port") == "5557"
    assert option(cmd, "--expect-workers") == "4"
    assert len(p.workers) == 1
    assert option(p.workers[0], "--master-host") == "127.0.0.1"


def test_ui_mode_is_not_headless_and_binds_loopback() -> None:
    p = plan("--ui", "--workers", "1", "--web-port", "8099", port=47002)
    cmd = p.master
    assert "--headless" not in cmd
    assert option(cmd, "--web-host") == "127.0.0.1"
    assert option(cmd, "--web-port") == "8099"
    assert "--expect-workers" not in cmd  # the page starts the test once workers are there
    assert len(p.workers) == 1


def test_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cmd = plan("--thresholds", "mine.toml", "--oracle-secret-file", "secret").master
    assert option(cmd, "--thresholds") == str(tmp_path / "mine.toml")
    assert option(cmd, "--oracle-secret-file") == str(tmp_path / "secret")


def test_thresholds_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCUST_THRESHOLDS", "/etc/strict.toml")
    assert option(plan().master, "--thresholds") == "/etc/strict.toml"


def test_extra_locust_options_after_double_dash() -> None:
    cmd = plan("--", "--loglevel", "DEBUG").master
    assert cmd[-2:] == ["--loglevel", "DEBUG"]


def test_report_dirs_are_unique(tmp_path: Path) -> None:
    first = run.new_report_dir(tmp_path, "flow")
    first.mkdir()
    second = run.new_report_dir(tmp_path, "flow")
    assert first.name.endswith("-flow") and second != first
    assert second.parent == tmp_path


def test_bad_thresholds_file_stops_before_any_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[default]\nmin_rps = 3\n")
    assert run.main(["--host", HOST, "--thresholds", str(bad)]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_unknown_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--host", HOST, "--scenario", "nope"]) == 2
    assert "unknown scenario" in capsys.readouterr().err


def test_no_oracle_secret_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CAPTCHA_ORACLE_SECRET", raising=False)
    code = run.main(["--host", HOST, "--reports-root", str(tmp_path)])
    assert code == 2
    assert "no oracle secret" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_locust_conf_points_at_existing_files() -> None:
    conf = dict(
        line.split(" = ", 1)
        for line in (ROOT / "loadtests/locust.conf").read_text().splitlines()
        if " = " in line and not line.startswith("#")
    )
    assert (ROOT / conf["locustfile"]).is_file()
    assert (ROOT / conf["thresholds"]).is_file()
    assert "headless" not in conf  # run.py --ui could not undo it


def test_an_unreadable_secret_file_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CAPTCHA_ORACLE_SECRET", raising=False)
    missing = tmp_path / "nope"
    argv = ["--host", HOST, "--reports-root", str(tmp_path), "--oracle-secret-file", str(missing)]
    assert run.main(argv) == 2
    assert "cannot read the oracle secret" in capsys.readouterr().err
