"""Unit tests for nspawnvm.cli: options, environment defaults, output and exit statuses."""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv4Network

import pytest

from nspawnvm.cli import main, parse_args, resolve_machine
from nspawnvm.config import DEFAULT_NAME
from nspawnvm.lab import DEFAULT_LAB, DEFAULT_LAB_SUBNET

LAB_ENV = ("LOCALVM_NAME", "LOCALVM_SUBNET", "LOCALVM_LAB", "LOCALVM_LAB_SUBNET")
VM_ENV = ("LOCALVM_NAME", "LOCALVM_SUBNET", "LOCALVM_BRIDGE", "LOCALVM_INDEX", "LOCALVM_RELEASE")


@pytest.fixture
def clean_env(monkeypatch):
    for name in {*LAB_ENV, *VM_ENV}:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


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


def test_unknown_release_is_one_line_before_anything_runs(clean_env, capsys) -> None:
    clean_env.setenv("LOCALVM_RELEASE", "sid")
    # up would need root and boot a VM: the release is refused before either.
    assert main(["--name", "lvtest", "up"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "localvm: error: unknown release 'sid': use trixie (Debian 13) or bookworm (Debian 12)\n"
    )


def test_release_from_option_or_environment(clean_env) -> None:
    assert parse_args(["up"]).release is None  # the existing VM's, else the default
    clean_env.setenv("LOCALVM_RELEASE", "bookworm")
    assert parse_args(["up"]).release == "bookworm"
    assert parse_args(["--release", "trixie", "up"]).release == "trixie"


# --- bridge and index ------------------------------------------------------------------------


def test_bridge_and_index_before_or_after_command(clean_env) -> None:
    before = parse_args(["--bridge", "br-lab", "--index", "2", "--name", "lab2", "up"])
    after = parse_args(["up", "--name", "lab2", "--index", "2", "--bridge", "br-lab"])
    for args in (before, after):
        assert (args.name, args.bridge, args.index) == ("lab2", "br-lab", 2)
    unset = parse_args(["up"])
    assert (unset.bridge, unset.index, unset.subnet) == (None, None, None)


def test_bridge_and_index_from_environment(clean_env) -> None:
    clean_env.setenv("LOCALVM_BRIDGE", "br-lab")
    clean_env.setenv("LOCALVM_INDEX", "3")
    args = parse_args(["status"])
    assert (args.bridge, args.index) == ("br-lab", 3)
    assert parse_args(["--index", "4", "status"]).index == 4  # the option wins


def test_bad_index_in_environment_is_a_usage_error(clean_env) -> None:
    clean_env.setenv("LOCALVM_INDEX", "two")
    with pytest.raises(SystemExit) as info:
        parse_args(["status"])
    assert info.value.code == 2


def test_resolve_machine_defaults_and_options(clean_env, tmp_path) -> None:
    plain = resolve_machine(parse_args(["up"]), None, tmp_path)
    assert (plain.subnet, plain.bridge, plain.index) == (IPv4Network("10.231.0.0/24"), None, 1)
    args = parse_args(["--subnet", "10.231.6.0/24", "--bridge", "br-lab", "--index", "2", "up"])
    machine = resolve_machine(args, None, tmp_path)
    assert (machine.host_iface, machine.vm_address) == ("br-lab", IPv4Address("10.231.6.3"))


def test_resolve_machine_completes_options_from_the_state_file(clean_env, make_state) -> None:
    recorded = make_state(name="lab2", subnet="10.231.6.0/24", bridge="br-lab", index=2)
    machine = resolve_machine(parse_args(["--name", "lab2", "address"]), recorded)
    assert (machine.bridge, machine.index, machine.vm_address) == (
        "br-lab",
        2,
        IPv4Address("10.231.6.3"),
    )
    # What the options say wins (up then refuses to change a running VM).
    explicit = parse_args(["--name", "lab2", "--index", "5", "--subnet", "10.231.8.0/24", "up"])
    machine = resolve_machine(explicit, recorded)
    assert (machine.subnet, machine.bridge, machine.index) == (
        IPv4Network("10.231.8.0/24"),
        "br-lab",
        5,
    )


def test_bad_bridge_is_an_error(clean_env, capsys) -> None:
    assert main(["--name", "lvtest", "--bridge", "Br_Lab", "address"]) == 1
    assert capsys.readouterr().err.startswith("localvm: error: invalid bridge name 'Br_Lab'")


def test_address_by_index_needs_no_root(clean_env, capsys) -> None:
    clean_env.setattr(os, "geteuid", lambda: 1000)
    argv = ["--name", "lvtest", "--subnet", "10.231.7.0/24", "--bridge", "br-lv", "--index", "3"]
    assert main([*argv, "address"]) == 0
    assert capsys.readouterr().out == "10.231.7.4\n"


def test_index_outside_the_subnet_is_an_error(clean_env, capsys) -> None:
    assert main(["--name", "lvtest", "--subnet", "10.231.7.0/30", "--index", "2", "address"]) == 1
    assert "invalid VM index 2 for subnet 10.231.7.0/30" in capsys.readouterr().err


# --- lab ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--name", "hx", "--subnet", "10.231.6.0/24", "lab", "up", "--count", "3"],
        ["lab", "--name", "hx", "up", "--subnet", "10.231.6.0/24", "--count", "3"],
        ["lab", "up", "--count", "3", "--name", "hx", "--subnet", "10.231.6.0/24"],
    ],
)
def test_lab_up_options_anywhere(clean_env, argv: list[str]) -> None:
    args = parse_args(argv)
    assert (args.command, args.lab_command, args.count) == ("lab", "up", 3)
    assert (args.name, args.subnet) == ("hx", "10.231.6.0/24")


def test_lab_defaults_are_the_labs_not_the_single_vms(clean_env) -> None:
    clean_env.setenv("LOCALVM_NAME", "envvm")
    clean_env.setenv("LOCALVM_SUBNET", "10.231.4.0/24")
    args = parse_args(["lab", "stop"])
    assert (args.name, args.subnet) == (DEFAULT_LAB, DEFAULT_LAB_SUBNET)
    clean_env.setenv("LOCALVM_LAB", "envlab")
    clean_env.setenv("LOCALVM_LAB_SUBNET", "10.231.5.0/24")
    args = parse_args(["lab", "destroy"])
    assert (args.name, args.subnet, args.lab_command) == ("envlab", "10.231.5.0/24", "destroy")
    assert parse_args(["--name", "hx", "lab", "status"]).name == "hx"


def test_lab_status_count_is_optional(clean_env) -> None:
    assert parse_args(["lab", "status"]).count is None
    assert parse_args(["lab", "status", "--count", "3"]).count == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["lab", "up"],  # --count is required
        ["lab"],  # so is the lab command
        ["lab", "stop", "--count", "3"],  # stop and destroy take every VM of the lab
        ["--bridge", "br-x", "lab", "status"],  # the lab names its bridge
        ["--index", "2", "lab", "up", "--count", "2"],
        ["lab", "up", "--count", "two"],
    ],
)
def test_lab_usage_errors(clean_env, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
