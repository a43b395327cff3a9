"""Unit tests for nspawnvm.cli: options, environment defaults, output and exit statuses."""

from __future__ import annotations

import os

from nspawnvm.cli import main, parse_args
from nspawnvm.config import DEFAULT_NAME


def test_cli_defaults_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("LOCALVM_NAME", "envvm")
    monkeypatch.setenv("LOCALVM_SUBNET", "10.231.4.0/24")
    args = parse_args(["address"])
    assert (args.name, args.subnet) == ("envvm", "10.231.4.0/24")


def test_cli_options_before_or_after_command(monkeypatch) -> None:
    monkeypatch.delenv("LOCALVM_NAME", raising=False)
    before = parse_args(["--name", "lvtest", "up"])
    assert before.name == "lvtest"
    after = parse_args(["up", "--name", "lvtest"])
    assert after.name == "lvtest"
    assert parse_args(["up"]).name == DEFAULT_NAME


def test_cli_ssh_keeps_remote_command() -> None:
    args = parse_args(["--name", "lvtest", "ssh", "--", "systemctl", "is-system-running"])
    assert args.remote[-2:] == ["systemctl", "is-system-running"]
    assert parse_args(["ssh"]).remote == []


def test_address_needs_no_root(monkeypatch, capsys) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["--name", "lvtest", "--subnet", "10.231.7.0/24", "address"]) == 0
    assert capsys.readouterr().out == "10.231.7.2\n"


def test_ssh_config_command_prints_path(capsys) -> None:
    assert main(["--name", "lvtest", "ssh-config"]) == 0
    assert capsys.readouterr().out == "/var/lib/localvm/lvtest/ssh_config\n"


def test_non_root_gets_one_line_and_exit_2(monkeypatch, capsys) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["--name", "lvtest", "status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("localvm: needs root on Linux")
    assert err.count("\n") == 1


def test_bad_name_is_an_error_not_a_traceback(capsys) -> None:
    assert main(["--name", "Bad_Name", "address"]) == 1
    assert capsys.readouterr().err.startswith("localvm: error: invalid VM name 'Bad_Name'")
