"""The VM's disk: the debootstrap base image, built once into a cache shared by all VMs, and
each VM's copy of it, made its own once (hostname, machine id, SSH host keys, the host's CAs)
and configured at every boot (networkd address, resolver, authorised key, ssh_config).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from .config import Machine
from .errors import LocalVMError, say
from .host import file_lock, run, run_logged
from .ssh import ensure_client_key, known_hosts_line, render_ssh_config

# One base image per release, each in a folder of its own under the cache.
DEFAULT_CACHE = "/var/cache/localvm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
# The Debian releases a VM can run, the default (the current stable) first.
RELEASES = {"trixie": "Debian 13", "bookworm": "Debian 12"}
DEFAULT_RELEASE = next(iter(RELEASES))
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "sudo",
    "iproute2",
    "ca-certificates",
)
# Bump when the base recipe changes so that existing caches are rebuilt.
BASE_FORMAT = 1
# Sorts before the image's 80-container-host0.network (DHCP): networkd uses the first match.
NETWORK_FILE = "etc/systemd/network/10-host0.network"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")


def render_network_config(machine: Machine) -> str:
    return (
        "[Match]\n"
        "Name=host0\n"
        "\n"
        "[Network]\n"
        f"Address={machine.vm_address}/{machine.subnet.prefixlen}\n"
        f"Gateway={machine.host_address}\n"
        "LinkLocalAddressing=no\n"
        "IPv6AcceptRA=no\n"
    )


def validate_release(release: str) -> str:
    if release not in RELEASES:
        known = " or ".join(f"{name} ({label})" for name, label in RELEASES.items())
        raise LocalVMError(f"unknown release {release!r}: use {known}")
    return release


def shared_caches(cache_root: Path, release: str) -> list[tuple[Path, str]]:
    """Host folders the VM mounts, shared by the VMs of its release: pip's cache, so that a
    package pip builds from source (uWSGI: a minute of compiling) is built once per release,
    not once per VM. Kept with the base images (make vm-destroy leaves both)."""
    pip = cache_root / f"{release}-pip"
    pip.mkdir(mode=0o700, parents=True, exist_ok=True)
    return [(pip, "/root/.cache/pip")]


def rootfs_release(rootfs: Path) -> str | None:
    """The release an existing rootfs was built from (its os-release), None if unreadable."""
    try:
        text = (rootfs / "etc/os-release").read_text()
    except OSError:
        return None
    found = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.M)
    return found.group(1) if found else None


def chosen_release(asked: str | None, existing: str | None, name: str) -> str:
    """The release of the VM: the one asked for, else the one its disk already holds, else the
    default. A VM cannot change release in place."""
    if asked is not None:
        validate_release(asked)
        if existing is not None and existing != asked:
            raise LocalVMError(
                f"{name} runs {existing}, not {asked}: destroy it first to change its release "
                "(make vm-destroy), or leave RELEASE unset to keep it"
            )
        return asked
    return existing or DEFAULT_RELEASE


def render_apt_sources(mirror: str, release: str) -> str:
    return (
        f"deb {mirror} {release} main\n"
        f"deb {mirror} {release}-updates main\n"
        f"deb {SECURITY_MIRROR} {release}-security main\n"
    )


def render_hosts(name: str) -> str:
    return (
        "127.0.0.1\tlocalhost\n"
        f"127.0.1.1\t{name}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
    )


def base_recipe(release: str) -> dict[str, object]:
    return {
        "format": BASE_FORMAT, "suite": release, "variant": "minbase", "packages": BASE_PACKAGES,
    }  # fmt: skip


def base_is_complete(marker_text: str | None, release: str) -> bool:
    if marker_text is None:
        return False
    try:
        recorded = json.loads(marker_text)
    except ValueError:
        return False
    expected = json.loads(json.dumps(base_recipe(release)))  # tuples become lists, as in the file
    return isinstance(recorded, dict) and recorded.get("recipe") == expected


def unescape_mount_path(field: str) -> str:
    # /proc/self/mounts escapes space, tab, newline and backslash as octal (\040 ...).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(mounts_text: str, path: Path) -> list[str]:
    prefix = str(path).rstrip("/")
    found = []
    for line in mounts_text.splitlines():
        tokens = line.split()
        if len(tokens) < 2:
            continue
        mount_point = unescape_mount_path(tokens[1])
        if mount_point == prefix or mount_point.startswith(prefix + "/"):
            found.append(mount_point)
    return found


def path_in_rootfs(rootfs: Path, relative: str) -> Path:
    """A path inside rootfs whose parent directory cannot lead out of it through symlinks."""
    target = rootfs / relative.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(rootfs.resolve()):
        raise LocalVMError(f"{relative} leads outside of {rootfs}")
    return target


def write_into(rootfs: Path, relative: str, text: str, mode: int = 0o644) -> None:
    target = path_in_rootfs(rootfs, relative)
    # A symlink here (e.g. resolv.conf -> /run/...) would make us write to the host's file.
    if target.is_symlink():
        target.unlink()
    target.write_text(text)
    target.chmod(mode)


def chroot_run(rootfs: Path, *cmd: str) -> None:
    run(["chroot", str(rootfs), *cmd])


def remove_tree(path: Path) -> None:
    mounts = mounts_under(Path("/proc/self/mounts").read_text(), path)
    if mounts:
        raise LocalVMError(f"refusing to delete {path}: still mounted: {', '.join(mounts)}")
    run(["rm", "-rf", "--one-file-system", str(path)], timeout=600)


def build_base(rootfs: Path, mirror: str, release: str, log: Path) -> None:
    cmd = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        release,
        str(rootfs),
        mirror,
    ]
    say(f"building the {release} base image with debootstrap (once; about a minute)...")
    run_logged(cmd, log, "debootstrap", timeout=1800)
    # Generic to every VM, so done once here: networkd (the address must survive a reboot of the
    # VM), apt sources, and no SSH host keys (each VM gets its own).
    chroot_run(rootfs, "systemctl", "enable", "systemd-networkd")
    write_into(rootfs, "etc/apt/sources.list", render_apt_sources(mirror, release))
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    chroot_run(rootfs, "apt-get", "clean")


def ensure_base(cache_root: Path, mirror: str, release: str) -> Path:
    """The release's base rootfs, built once into a temp dir and renamed into place when
    complete."""
    cache = cache_root / release
    marker = cache / "base.json"
    with file_lock(cache.parent / f".{cache.name}.lock", f"the base image {cache}"):
        with contextlib.suppress(OSError):
            if base_is_complete(marker.read_text(), release):
                return cache / "rootfs"
        for leftover in cache.parent.glob(f".{cache.name}.tmp-*"):
            say(f"removing an unfinished build: {leftover}")
            remove_tree(leftover)
        tmp = cache.parent / f".{cache.name}.tmp-{os.getpid()}"
        (tmp / "rootfs").mkdir(parents=True)
        build_base(tmp / "rootfs", mirror, release, tmp / "debootstrap.log")
        recipe = {"recipe": base_recipe(release), "mirror": mirror, "built_at": time.time()}
        (tmp / "base.json").write_text(json.dumps(recipe, indent=2) + "\n")
        if cache.exists():
            outdated = cache.parent / f".{cache.name}.tmp-old-{os.getpid()}"
            os.rename(cache, outdated)
            remove_tree(outdated)
        os.rename(tmp, cache)
        return cache / "rootfs"


def authorize_key(rootfs: Path, pubkey: str) -> None:
    ssh_dir = path_in_rootfs(rootfs, "root/.ssh/authorized_keys").parent
    ssh_dir.chmod(0o700)
    keys_file = ssh_dir / "authorized_keys"
    existing = keys_file.read_text() if keys_file.exists() else ""
    if pubkey not in existing.splitlines():
        write_into(rootfs, "root/.ssh/authorized_keys", existing + pubkey + "\n", 0o600)


def install_host_cas(rootfs: Path) -> None:
    """Trust the host's extra CAs (e.g. an egress proxy's), or HTTPS to PyPI fails in the VM."""
    certs = sorted(HOST_CA_DIR.rglob("*.crt")) if HOST_CA_DIR.is_dir() else []
    for cert in certs:
        relative = cert.relative_to(HOST_CA_DIR)
        target = path_in_rootfs(rootfs, f"usr/local/share/ca-certificates/{relative}")
        shutil.copyfile(cert, target)
    if certs:
        chroot_run(rootfs, "update-ca-certificates")


def personalise_rootfs(machine: Machine, rootfs: Path) -> None:
    """One-time identity of a new VM: hostname, machine id, SSH host keys, trusted CAs."""
    write_into(rootfs, "etc/hostname", f"{machine.name}\n")
    write_into(rootfs, "etc/hosts", render_hosts(machine.name))
    # The base image's machine id would be shared by every VM made from it.
    write_into(rootfs, "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    dbus_id = path_in_rootfs(rootfs, "var/lib/dbus/machine-id")
    dbus_id.unlink(missing_ok=True)
    dbus_id.symlink_to("/etc/machine-id")
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    chroot_run(rootfs, "ssh-keygen", "-A")
    install_host_cas(rootfs)


def configure_for_boot(machine: Machine) -> None:
    """Settings redone at every boot: the subnet or the host's resolver may have changed."""
    write_into(machine.rootfs, NETWORK_FILE, render_network_config(machine))
    write_into(machine.rootfs, "etc/resolv.conf", Path("/etc/resolv.conf").read_text())
    authorize_key(machine.rootfs, ensure_client_key(machine))
    host_key = (machine.rootfs / "etc/ssh/ssh_host_ed25519_key.pub").read_text()
    machine.known_hosts.write_text(known_hosts_line(machine.vm_address, host_key))
    machine.ssh_config.write_text(
        render_ssh_config(machine.name, machine.vm_address, machine.key, machine.known_hosts)
    )


def create_rootfs(machine: Machine, cache_root: Path, mirror: str, release: str) -> None:
    base = ensure_base(cache_root, mirror, release)
    tmp = machine.dir / "rootfs.tmp"
    if tmp.exists():
        remove_tree(tmp)
    say(f"copying the base image to {machine.rootfs}...")
    run(["cp", "-a", "--reflink=auto", str(base), str(tmp)], timeout=900)
    personalise_rootfs(machine, tmp)
    os.rename(tmp, machine.rootfs)
