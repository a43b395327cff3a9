"""Unit tests for nspawnvm.host: preconditions and running host programs."""

from __future__ import annotations

import pytest

from nspawnvm.errors import LocalVMError
from nspawnvm.host import missing_tools, precondition_problem, run


def test_preconditions_met() -> None:
    assert precondition_problem("linux", 0, []) is None


@pytest.mark.parametrize(
    ("platform", "euid", "missing", "detail"),
    [
        ("darwin", 501, [], "(this is darwin)"),
        ("linux", 1000, [], "(not running as root)"),
        ("linux", 0, ["debootstrap"], "(missing: debootstrap)"),
        ("linux", 1000, ["debootstrap", "iptables"], "(missing: debootstrap, iptables)"),
    ],
)
def test_precondition_message(platform: str, euid: int, missing: list[str], detail: str) -> None:
    message = precondition_problem(platform, euid, missing)
    assert message is not None
    assert "\n" not in message
    assert detail in message
    assert message.endswith("use the Vagrantfile: vagrant up")


def test_missing_tools() -> None:
    assert missing_tools({"ip": "/usr/sbin/ip", "debootstrap": None}) == ["debootstrap"]


def test_failed_command_reports_command_and_stderr() -> None:
    with pytest.raises(LocalVMError) as info:
        run(["sh", "-c", "echo boom >&2; exit 3"])
    assert "exit 3" in str(info.value)
    assert "sh -c" in str(info.value)
    assert "boom" in str(info.value)


def test_missing_program_is_an_error() -> None:
    with pytest.raises(LocalVMError, match="command not found"):
        run(["localvm-no-such-program"])
