"""tools/apphost.py reads an app host's connection from an inventory, templated by Ansible."""

from __future__ import annotations

import pytest

from apphost import ROOT, app_host


def test_reads_the_example_inventory():
    host = app_host("example")
    assert (host.host, host.user, host.port) == ("app1.example.com", "deploy", "22")
    assert host.secrets_path() == ROOT.joinpath(
        "configs/example/.secrets/app1.example.com"
    ).relative_to(ROOT)
    assert not host.enabled("profiling")
    assert host.ssh("-N")[-2:] == ["-N", "deploy@app1.example.com"]


def test_templates_the_local_inventory(monkeypatch):
    monkeypatch.setenv("LOCALVM_NAME", "somevm")
    host = app_host("local")
    assert host.host == "somevm"
    assert "-F /var/lib/localvm/somevm/ssh_config" in host.ssh_args
    assert host.enabled("profiling")


def test_an_unknown_inventory_is_a_clear_error():
    with pytest.raises(SystemExit, match="configs/nope"):
        app_host("nope")
