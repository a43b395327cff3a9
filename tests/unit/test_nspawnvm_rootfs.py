"""Unit tests for nspawnvm.rootfs: the base image marker, rendered files, writes into a rootfs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nspawnvm.errors import LocalVMError
from nspawnvm.rootfs import (
    BASE_FORMAT,
    DEFAULT_RELEASE,
    NETWORK_FILE,
    base_is_complete,
    base_recipe,
    chosen_release,
    mounts_under,
    render_apt_sources,
    render_hosts,
    render_network_config,
    rootfs_release,
    validate_release,
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


@pytest.mark.parametrize("release", ["trixie", "bookworm"])
def test_apt_sources(release: str) -> None:
    lines = render_apt_sources("http://deb.debian.org/debian", release).splitlines()
    assert lines == [
        f"deb http://deb.debian.org/debian {release} main",
        f"deb http://deb.debian.org/debian {release}-updates main",
        f"deb http://deb.debian.org/debian-security {release}-security main",
    ]


# --- releases --------------------------------------------------------------------------------


def test_the_default_release_is_debian_13() -> None:
    assert DEFAULT_RELEASE == "trixie"


@pytest.mark.parametrize("release", ["sid", "buster", "Trixie", "", "trixie; rm -rf /"])
def test_an_unknown_release_is_refused_with_the_known_ones(release: str) -> None:
    with pytest.raises(LocalVMError, match=r"use trixie \(Debian 13\) or bookworm \(Debian 12\)"):
        validate_release(release)


def test_the_release_asked_for_wins_over_the_default() -> None:
    assert chosen_release("bookworm", None, "vm") == "bookworm"
    assert chosen_release(None, None, "vm") == "trixie"


def test_an_existing_vm_keeps_its_release_unless_another_is_asked_for() -> None:
    assert chosen_release(None, "bookworm", "vm") == "bookworm"
    assert chosen_release("bookworm", "bookworm", "vm") == "bookworm"
    with pytest.raises(LocalVMError, match="vm runs bookworm, not trixie: destroy it first"):
        chosen_release("trixie", "bookworm", "vm")


def test_rootfs_release_reads_os_release(tmp_path) -> None:
    assert rootfs_release(tmp_path) is None
    write_into(tmp_path, "etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\n'
               'VERSION_CODENAME=trixie\nID=debian\n')  # fmt: skip
    assert rootfs_release(tmp_path) == "trixie"


def test_hosts_file_names_the_vm() -> None:
    assert "127.0.1.1\tlvtest" in render_hosts("lvtest").splitlines()


def test_base_marker() -> None:
    good = json.dumps({"recipe": base_recipe("trixie"), "built_at": 1.0})
    assert base_is_complete(good, "trixie")
    assert not base_is_complete(good, "bookworm")
    assert not base_is_complete(None, "trixie")
    assert not base_is_complete("{half", "trixie")
    old = base_recipe("trixie") | {"format": BASE_FORMAT - 1}
    assert not base_is_complete(json.dumps({"recipe": old}), "trixie")


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
