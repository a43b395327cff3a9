"""Unit tests for nspawnvm.rootfs: the base image marker, rendered files, writes into a rootfs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nspawnvm.errors import LocalVMError
from nspawnvm.rootfs import (
    BASE_FORMAT,
    NETWORK_FILE,
    base_is_complete,
    base_recipe,
    mounts_under,
    render_apt_sources,
    render_hosts,
    render_network_config,
    write_into,
)

# --- mounts -----------------------------------------------------------------------------------


def test_mounts_under_decodes_escapes_and_ignores_siblings() -> None:
    mounts = (
        "/dev/vda / ext4 rw 0 0\n"
        "proc /var/lib/localvm/lvtest/rootfs/proc proc rw 0 0\n"
        "tmpfs /var/lib/localvm/lvtest2/rootfs/tmp tmpfs rw 0 0\n"
        "tmpfs /var/lib/localvm/lvtest/my\\040dir tmpfs rw 0 0\n"
    )
    assert mounts_under(mounts, Path("/var/lib/localvm/lvtest")) == [
        "/var/lib/localvm/lvtest/rootfs/proc",
        "/var/lib/localvm/lvtest/my dir",
    ]
    assert mounts_under(mounts, Path("/srv")) == []


# --- rendering -------------------------------------------------------------------------------


def test_network_config(machine) -> None:
    text = render_network_config(machine)
    assert "Name=host0" in text
    assert "Address=10.231.7.2/24" in text
    assert "Gateway=10.231.7.1" in text
    # networkd applies the first matching file in lexical order: ours must beat the image's.
    assert NETWORK_FILE.startswith("etc/systemd/network/")
    assert Path(NETWORK_FILE).name < "80-container-host0.network"


def test_apt_sources() -> None:
    lines = render_apt_sources("http://deb.debian.org/debian").splitlines()
    assert lines == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]


def test_hosts_file_names_the_vm() -> None:
    assert "127.0.1.1\tlvtest" in render_hosts("lvtest").splitlines()


def test_base_marker() -> None:
    good = json.dumps({"recipe": base_recipe(), "built_at": 1.0})
    assert base_is_complete(good)
    assert not base_is_complete(None)
    assert not base_is_complete("{half")
    old = base_recipe() | {"format": BASE_FORMAT - 1}
    assert not base_is_complete(json.dumps({"recipe": old}))


# --- rootfs writes ---------------------------------------------------------------------------


def test_write_into_replaces_symlink_instead_of_following_it(tmp_path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    host_file = tmp_path / "host-resolv.conf"
    host_file.write_text("host\n")
    (rootfs / "etc/resolv.conf").symlink_to(host_file)
    write_into(rootfs, "etc/resolv.conf", "vm\n")
    assert host_file.read_text() == "host\n"
    assert not (rootfs / "etc/resolv.conf").is_symlink()
    assert (rootfs / "etc/resolv.conf").read_text() == "vm\n"


def test_write_into_refuses_symlinked_directory_leading_out(tmp_path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (rootfs / "etc").symlink_to(outside)
    with pytest.raises(LocalVMError, match="outside"):
        write_into(rootfs, "/etc/hostname", "x\n")
    assert list(outside.iterdir()) == []


def test_write_into_sets_mode(tmp_path) -> None:
    write_into(tmp_path, "root/.ssh/authorized_keys", "key\n", 0o600)
    assert (tmp_path / "root/.ssh/authorized_keys").stat().st_mode & 0o777 == 0o600
