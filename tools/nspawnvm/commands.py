"""What each subcommand does: up (reuse, repair, restart or boot the VM), stop, destroy,
status, address, ssh-config and ssh. Each handler takes the Machine and the parsed options and
returns the exit status; bring_up is `up` without its summary, for the lab too.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from .config import LOCK_ROOT, Machine, VMState, read_state, write_state
from .errors import LocalVMError, say
from .host import file_lock, tool_env
from .network import (
    IP_FORWARD,
    bridge_lock,
    check_bridge_peers,
    check_subnet_free,
    clean_host_side,
    enable_forwarding,
    ensure_nat_rule,
    keep_networkd_off,
    link_exists,
    set_up_host_side,
)
from .processes import (
    boot,
    container_init_pids,
    container_pid1,
    nspawn_pids,
    stop_container,
    vm_running,
    wait_until,
)
from .rootfs import (
    chosen_release,
    configure_for_boot,
    create_rootfs,
    remove_tree,
    rootfs_release,
    shared_caches,
)
from .ssh import ssh_command, ssh_works, wait_for_ssh


def vm_lock(machine: Machine) -> AbstractContextManager[None]:
    """Serialise the runs that change one VM's host state (up, stop, destroy)."""
    return file_lock(LOCK_ROOT / f"{machine.name}.lock", machine.name)


def machine_status(nspawn_alive: bool, rootfs_exists: bool) -> str:
    if nspawn_alive:
        return "running"
    return "stopped" if rootfs_exists else "absent"


def has_stale_state(state: VMState | None, nspawn_alive: bool) -> bool:
    """A state file without a live nspawn means the VM died under us (e.g. its session ended)."""
    return state is not None and not nspawn_alive


def up_action(nspawn_alive: bool, init_alive: bool, ssh_ok: bool) -> str:
    """What `up` does given the VM's processes: reuse, repair (host side), restart or boot."""
    if (nspawn_alive or init_alive) and ssh_ok:
        return "reuse"
    if nspawn_alive:
        return "repair"  # still booting, or its host side was lost
    if init_alive:
        return "restart"  # orphaned and unreachable: nothing supervises it any more
    return "boot"


def changed_settings(state: VMState, machine: Machine) -> list[str]:
    """What a running VM's recorded network differs in from the one asked for."""
    recorded = (state.subnet, state.bridge or "none", state.index)
    wanted = (str(machine.subnet), machine.bridge or "none", machine.index)
    return [
        f"{what} {was}, not {want}"
        for what, was, want in zip(("subnet", "bridge", "index"), recorded, wanted, strict=True)
        if was != want
    ]


def start_vm(machine: Machine, binds: Sequence[tuple[Path, str]]) -> VMState:
    # The bridge's lock spans its set-up and the boot: a VM leaving the bridge meanwhile must
    # see this one running (its state file) before it decides to delete the bridge.
    with bridge_lock(machine.bridge):
        keep_networkd_off(machine)
        if machine.bridge:
            set_up_host_side(machine)
        return boot_and_record(machine, binds)


def boot_and_record(machine: Machine, binds: Sequence[tuple[Path, str]]) -> VMState:
    say(f"booting {machine.name} (console log: {machine.console_log})...")
    pid = boot(machine, binds)
    state = VMState(
        name=machine.name,
        nspawn_pid=pid,
        container_pid1=None,
        subnet=str(machine.subnet),
        host_address=str(machine.host_address),
        vm_address=str(machine.vm_address),
        iface=machine.iface,
        forwarding_was=IP_FORWARD.read_text().strip(),
        nat_rule=[],
        started_at=time.time(),
        bridge=machine.bridge,
        index=machine.index,
    )
    # Recorded at once, so that a failure below still leaves something for stop/destroy.
    write_state(machine.state_file, state)
    state.container_pid1 = wait_until(
        "the container's init", lambda: container_pid1(pid), 15, machine, pid
    )
    wait_until(f"interface {machine.iface}", lambda: link_exists(machine.iface), 15, machine, pid)
    set_up_host_side(machine)
    state.forwarding_was = enable_forwarding(machine)
    state.nat_rule = ensure_nat_rule(machine)
    write_state(machine.state_file, state)
    return state


def print_summary(machine: Machine, started: float) -> None:
    print(f"name:    {machine.name}")
    print(f"release: {rootfs_release(machine.rootfs)}")
    print(f"address: {machine.vm_address}")
    print(f"ssh:     ssh -F {machine.ssh_config} {machine.name}")
    print(f"took:    {time.monotonic() - started:.1f} s")


def cmd_up(machine: Machine, args: argparse.Namespace) -> int:
    started = time.monotonic()
    bring_up(machine, args)
    print_summary(machine, started)
    return 0


def bring_up(machine: Machine, args: argparse.Namespace) -> None:
    """Reuse, repair, restart or boot the VM until SSH works."""
    # Checked before anything changes, a running VM included: it cannot change release.
    release = chosen_release(args.release, rootfs_release(machine.rootfs), machine.name)
    state = read_state(machine.state_file)
    nspawns, inits = nspawn_pids(machine), container_init_pids(machine)
    changed = changed_settings(state, machine) if (nspawns or inits) and state else []
    if changed:
        raise LocalVMError(
            f"{machine.name} is running with {'; '.join(changed)}: "
            "stop it first to change its network"
        )
    action = up_action(bool(nspawns), bool(inits), bool(nspawns or inits) and ssh_works(machine))
    if action == "reuse":
        orphan = "" if nspawns else " (its systemd-nspawn process is gone; stop still works)"
        say(f"{machine.name} is already running and reachable{orphan}")
        return
    if action == "repair":
        say(f"{machine.name} is running but not reachable yet: setting up the host side again")
        with bridge_lock(machine.bridge):
            keep_networkd_off(machine)
            set_up_host_side(machine)
            enable_forwarding(machine)
            ensure_nat_rule(machine)
        wait_for_ssh(machine, nspawns[0])
        return
    if action == "restart":
        say(f"{machine.name} lost its systemd-nspawn process and is unreachable: restarting it")
        stop_container(machine)
    elif has_stale_state(state, nspawn_alive=False):
        say(f"{machine.name} is gone but left host state behind: cleaning it up")
    clean_host_side(machine, state)
    check_subnet_free(machine)
    check_bridge_peers(machine)
    machine.dir.mkdir(parents=True, exist_ok=True)
    machine.dir.chmod(0o700)
    if not machine.rootfs.exists():
        create_rootfs(machine, Path(args.cache), args.mirror, release)
    configure_for_boot(machine)
    state = start_vm(machine, shared_caches(Path(args.cache), release))
    wait_for_ssh(machine, state.nspawn_pid)
    say(f"{machine.name} is up")


def cmd_stop(machine: Machine, _args: argparse.Namespace) -> int:
    state = read_state(machine.state_file)
    if not stop_container(machine):
        say(f"{machine.name} is not running")
    clean_host_side(machine, state)
    return 0


def cmd_destroy(machine: Machine, args: argparse.Namespace) -> int:
    state = read_state(machine.state_file)
    stop_container(machine)
    clean_host_side(machine, state)
    if not machine.dir.exists():
        say(f"no VM named {machine.name}: nothing to destroy")
        return 0
    say(f"deleting {machine.dir}...")
    remove_tree(machine.dir)
    say(f"{machine.name} destroyed (the base image in {args.cache} is kept)")
    return 0


def cmd_status(machine: Machine, _args: argparse.Namespace) -> int:
    status = machine_status(vm_running(machine), machine.rootfs.exists())
    print(status)
    return 0 if status == "running" else 1


def cmd_address(machine: Machine, _args: argparse.Namespace) -> int:
    print(machine.vm_address)
    return 0


def cmd_ssh_config(machine: Machine, _args: argparse.Namespace) -> int:
    print(machine.ssh_config)
    return 0


def cmd_ssh(machine: Machine, args: argparse.Namespace) -> int:
    if not vm_running(machine) or not machine.ssh_config.exists():
        raise LocalVMError(f"{machine.name} is not running: run `localvm.py up` first")
    remote = list(args.remote)
    if remote[:1] == ["--"]:
        remote = remote[1:]
    cmd = ssh_command(machine, *remote)
    os.execvpe(cmd[0], cmd, tool_env())
