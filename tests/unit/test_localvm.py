"""Unit tests for the pure logic of tools/localvm.py (no root, no network, no containers)."""

from __future__ import annotations

import importlib.util
import json
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import ModuleType

import pytest

LOCALVM_PATH = Path(__file__).resolve().parents[2] / "tools" / "localvm.py"

# `ip -4 route show table all` as seen on a host running two localvm VMs.
IP_ROUTES = """\
default via 192.0.2.1 dev eth0
10.231.7.0/24 dev ve-lvtest proto kernel scope link src 10.231.7.1
10.231.9.0/24 dev ve-devvm proto kernel scope link src 10.231.9.1
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2
unreachable 172.16.0.0/12
local 10.231.7.1 dev ve-lvtest table local proto kernel scope host src 10.231.7.1
broadcast 10.231.7.255 dev ve-lvtest table local proto kernel scope link src 10.231.7.1
local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1
local 192.0.2.2 dev eth0 table local proto kernel scope host src 192.0.2.2
"""

# `iptables -t nat -S POSTROUTING`: iptables quotes comments containing a colon.
IPTABLES_S = """\
-P POSTROUTING ACCEPT
-A POSTROUTING -s 10.231.9.0/24 -m comment --comment devvm-manual -j MASQUERADE
-A POSTROUTING -s 10.231.7.0/24 ! -o ve-lvtest -m comment --comment "localvm:lvtest" -j MASQUERADE
-A POSTROUTING -s 10.231.8.0/24 ! -o ve-lvtest2 -m comment --comment "localvm:lvtest2" -j MASQUERADE
-A POSTROUTING -s 10.231.5.0/24 ! -o ve-lvtest -m comment --comment "localvm:lvtest" -j MASQUERADE
"""


@pytest.fixture(scope="module")
def lvm() -> ModuleType:
    # tools/ is not a package: load the script from its path.
    spec = importlib.util.spec_from_file_location("localvm_under_test", LOCALVM_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def machine(lvm: ModuleType, tmp_path: Path):
    return lvm.Machine("lvtest", IPv4Network("10.231.7.0/24"), tmp_path)


def make_state(lvm: ModuleType, **overrides: object):
    values: dict[str, object] = {
        "name": "lvtest",
        "nspawn_pid": 1685,
        "container_pid1": 1687,
        "subnet": "10.231.7.0/24",
        "host_address": "10.231.7.1",
        "vm_address": "10.231.7.2",
        "iface": "ve-lvtest",
        "forwarding_was": "0",
        "nat_rule": ["POSTROUTING", "-s", "10.231.7.0/24"],
        "started_at": 1700000000.5,
    }
    values.update(overrides)
    return lvm.VMState(**values)


# --- names and subnets -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["flaskvm", "a", "lvtest", "web-1", "abcdefghijk"])
def test_valid_names_are_accepted(lvm: ModuleType, name: str) -> None:
    assert lvm.validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "1vm", "Flask", "a_b", "a.b", "-ab", "abcdefghijkl", "vm ", "vm/x", "../x"]
)
def test_invalid_names_are_rejected(lvm: ModuleType, name: str) -> None:
    with pytest.raises(lvm.LocalVMError, match="invalid VM name"):
        lvm.validate_name(name)


def test_longest_name_keeps_interface_within_kernel_limit(lvm: ModuleType) -> None:
    machine = lvm.Machine(lvm.validate_name("abcdefghijk"), IPv4Network("10.231.0.0/24"))
    assert len(machine.iface) <= 15


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.231.7.1/24", "host bits set"),
        ("10.231.7.0/31", "too small"),
        ("8.8.8.0/24", "private"),
        ("127.0.0.0/24", "private"),
        ("169.254.1.0/24", "private"),
        ("banana", "invalid subnet"),
        ("10.231.7.0/33", "invalid subnet"),
    ],
)
def test_bad_subnets_are_rejected(lvm: ModuleType, text: str, message: str) -> None:
    with pytest.raises(lvm.LocalVMError, match=message):
        lvm.parse_subnet(text)


def test_default_subnet_is_accepted(lvm: ModuleType) -> None:
    assert lvm.parse_subnet(lvm.DEFAULT_SUBNET) == IPv4Network("10.231.0.0/24")


@pytest.mark.parametrize(
    ("subnet", "host", "vm"),
    [
        ("10.231.7.0/24", "10.231.7.1", "10.231.7.2"),
        ("10.231.0.0/16", "10.231.0.1", "10.231.0.2"),
        ("192.168.5.4/30", "192.168.5.5", "192.168.5.6"),
    ],
)
def test_addresses_are_first_and_second_host(
    lvm: ModuleType, subnet: str, host: str, vm: str
) -> None:
    assert lvm.derive_addresses(IPv4Network(subnet)) == (IPv4Address(host), IPv4Address(vm))


def test_machine_paths_and_names(machine, tmp_path: Path) -> None:
    assert machine.iface == "ve-lvtest"
    assert machine.nat_comment == "localvm:lvtest"
    assert machine.host_address == IPv4Address("10.231.7.1")
    assert machine.vm_address == IPv4Address("10.231.7.2")
    assert machine.rootfs == tmp_path / "lvtest" / "rootfs"
    assert machine.state_file == tmp_path / "lvtest" / "state.json"
    assert machine.ssh_config == tmp_path / "lvtest" / "ssh_config"
    assert machine.known_hosts.parent == machine.key.parent == machine.dir


# --- collisions --------------------------------------------------------------------------------


def test_parse_routes_skips_default_and_reads_types_and_devices(lvm: ModuleType) -> None:
    routes = lvm.parse_routes(IP_ROUTES)
    assert (IPv4Network("10.231.9.0/24"), "ve-devvm") in routes
    assert (IPv4Network("172.16.0.0/12"), None) in routes
    assert (IPv4Network("10.231.7.1/32"), "ve-lvtest") in routes
    assert all(dest != IPv4Network("0.0.0.0/0") for dest, _ in routes)


def test_no_conflict_for_a_free_subnet(lvm: ModuleType) -> None:
    routes = lvm.parse_routes(IP_ROUTES)
    resolvers = [IPv4Address("10.255.255.53")]
    assert lvm.subnet_conflicts(IPv4Network("10.231.3.0/24"), routes, resolvers, "ve-x") == []


def test_own_interface_routes_are_not_conflicts(lvm: ModuleType) -> None:
    routes = lvm.parse_routes(IP_ROUTES)
    assert lvm.subnet_conflicts(IPv4Network("10.231.7.0/24"), routes, [], "ve-lvtest") == []


def test_another_vms_subnet_is_a_conflict(lvm: ModuleType) -> None:
    routes = lvm.parse_routes(IP_ROUTES)
    problems = lvm.subnet_conflicts(IPv4Network("10.231.9.0/24"), routes, [], "ve-lvtest")
    assert problems == ["route 10.231.9.0/24 dev ve-devvm"]  # its local /32s are not repeated


def test_overlap_with_a_larger_or_smaller_route_is_a_conflict(lvm: ModuleType) -> None:
    routes = lvm.parse_routes(IP_ROUTES)
    assert lvm.subnet_conflicts(IPv4Network("172.20.0.0/24"), routes, [], "ve-x") == [
        "route 172.16.0.0/12"
    ]
    wide = lvm.subnet_conflicts(IPv4Network("10.231.0.0/16"), routes, [], "ve-lvtest")
    assert wide == ["route 10.231.9.0/24 dev ve-devvm"]


def test_host_address_routes_are_reported_when_not_covered(lvm: ModuleType) -> None:
    # The local-table /32 of eth0's address is covered by eth0's /24; an address on another
    # device is not.
    routes = lvm.parse_routes(IP_ROUTES + "local 192.0.2.77 dev dummy0 table local\n")
    problems = lvm.subnet_conflicts(IPv4Network("192.0.2.0/24"), routes, [], "ve-x")
    assert problems == ["route 192.0.2.0/24 dev eth0", "route 192.0.2.77/32 dev dummy0"]


def test_resolver_inside_subnet_is_a_conflict(lvm: ModuleType) -> None:
    resolvers = lvm.parse_resolvers(
        "# generated\nsearch example\nnameserver 10.255.255.53\nnameserver fd00::53\n"
        "nameserver bogus\n#nameserver 10.9.9.9\n"
    )
    assert resolvers == [IPv4Address("10.255.255.53")]
    problems = lvm.subnet_conflicts(IPv4Network("10.255.255.0/24"), [], resolvers, "ve-x")
    assert problems == ["DNS resolver 10.255.255.53"]


# --- state ------------------------------------------------------------------------------------


def test_state_round_trip(lvm: ModuleType, machine) -> None:
    machine.dir.mkdir(parents=True)
    state = make_state(lvm)
    lvm.write_state(machine.state_file, state)
    assert lvm.read_state(machine.state_file) == state
    assert json.loads(machine.state_file.read_text())["nspawn_pid"] == 1685
    assert list(machine.dir.iterdir()) == [machine.state_file]  # no temp file left


def test_missing_state_is_none(lvm: ModuleType, machine) -> None:
    assert lvm.read_state(machine.state_file) is None


@pytest.mark.parametrize(
    "text", ["{not json", "[]", '{"name": "lvtest"}', json.dumps({"nspawn_pid": "x"})]
)
def test_corrupt_state_is_ignored(lvm: ModuleType, machine, text: str) -> None:
    machine.dir.mkdir(parents=True)
    machine.state_file.write_text(text)
    assert lvm.read_state(machine.state_file) is None


def test_state_with_wrong_types_is_rejected(lvm: ModuleType) -> None:
    data = json.loads(make_state(lvm).to_json())
    data["nspawn_pid"] = "1685"
    with pytest.raises(lvm.LocalVMError):
        lvm.VMState.from_json(json.dumps(data))


@pytest.mark.parametrize(
    ("alive", "rootfs", "expected"),
    [(True, True, "running"), (False, True, "stopped"), (False, False, "absent")],
)
def test_machine_status(lvm: ModuleType, alive: bool, rootfs: bool, expected: str) -> None:
    assert lvm.machine_status(alive, rootfs) == expected


def test_stale_state_means_state_without_process(lvm: ModuleType) -> None:
    state = make_state(lvm)
    assert lvm.has_stale_state(state, nspawn_alive=False)
    assert not lvm.has_stale_state(state, nspawn_alive=True)
    assert not lvm.has_stale_state(None, nspawn_alive=False)


@pytest.mark.parametrize(
    ("nspawn", "init", "ssh", "expected"),
    [
        (True, True, True, "reuse"),
        (False, True, True, "reuse"),  # orphaned but reachable: leave it alone
        (True, True, False, "repair"),
        (False, True, False, "restart"),
        (False, False, False, "boot"),
    ],
)
def test_up_action(lvm: ModuleType, nspawn: bool, init: bool, ssh: bool, expected: str) -> None:
    assert lvm.up_action(nspawn, init, ssh) == expected


@pytest.mark.parametrize(
    ("forwarding_was", "marker", "others", "expected"),
    [
        ("0", False, False, True),  # we turned it on, we are the last one
        ("0", True, True, False),  # another VM still needs it
        ("1", False, False, False),  # it was on before localvm: leave it
        ("1", True, False, True),  # another localvm VM turned it on before us and is gone
        ("1", True, True, False),
    ],
)
def test_forwarding_restore_decision(
    lvm: ModuleType, forwarding_was: str, marker: bool, others: bool, expected: bool
) -> None:
    state = make_state(lvm, forwarding_was=forwarding_was)
    assert lvm.should_disable_forwarding(state, marker, others) is expected


def test_forwarding_restored_without_state_only_with_marker(lvm: ModuleType) -> None:
    assert lvm.should_disable_forwarding(None, True, False)
    assert not lvm.should_disable_forwarding(None, False, False)


# --- iptables --------------------------------------------------------------------------------


def test_nat_rule_spec(lvm: ModuleType, machine) -> None:
    spec = lvm.nat_rule_spec(machine)
    assert lvm.iptables_nat("-C", spec) == [
        "iptables", "-w", "5", "-t", "nat", "-C", "POSTROUTING", "-s", "10.231.7.0/24",
        "!", "-o", "ve-lvtest", "-m", "comment", "--comment", "localvm:lvtest",
        "-j", "MASQUERADE",
    ]  # fmt: skip


def test_rules_with_comment_finds_exactly_ours(lvm: ModuleType, machine) -> None:
    found = lvm.rules_with_comment(IPTABLES_S, "localvm:lvtest")
    assert [spec[spec.index("-s") + 1] for spec in found] == ["10.231.7.0/24", "10.231.5.0/24"]
    # What -S lists must be what -D accepts: the same spec as the one we add.
    assert found[0] == lvm.nat_rule_spec(machine)


def test_rules_with_comment_ignores_other_rules(lvm: ModuleType) -> None:
    assert lvm.rules_with_comment(IPTABLES_S, "localvm:devvm") == []
    assert lvm.rules_with_comment("-P POSTROUTING ACCEPT\n", "localvm:lvtest") == []


# --- processes --------------------------------------------------------------------------------


def test_nspawn_command(lvm: ModuleType, machine) -> None:
    cmd = lvm.nspawn_command(machine)
    assert cmd[0] == "systemd-nspawn"
    assert cmd[cmd.index("-D") + 1] == str(machine.rootfs)
    assert cmd[cmd.index("-M") + 1] == "lvtest"
    for flag in ("-b", "--register=no", "--keep-unit", "--network-veth"):
        assert flag in cmd
    assert lvm.is_nspawn_for(cmd, machine.rootfs)


def test_is_nspawn_for_rejects_other_machines_and_programs(lvm: ModuleType, machine) -> None:
    rootfs = str(machine.rootfs)
    assert lvm.is_nspawn_for(["/usr/bin/systemd-nspawn", f"--directory={rootfs}"], machine.rootfs)
    assert not lvm.is_nspawn_for(["systemd-nspawn", "-D", rootfs + "2"], machine.rootfs)
    assert not lvm.is_nspawn_for(["systemd-nspawn", "-D", "root", "-M", "lvtest"], machine.rootfs)
    assert not lvm.is_nspawn_for(["vim", "-D", rootfs], machine.rootfs)
    assert not lvm.is_nspawn_for([], machine.rootfs)


def test_parse_children_and_nspid(lvm: ModuleType) -> None:
    assert lvm.parse_children("1687 1702 \n") == [1687, 1702]
    assert lvm.parse_children("") == []
    status = "Name:\tsystemd\nTgid:\t3739\nNSpid:\t3739\t1\nNSsid:\t3739\t1\n"
    assert lvm.parse_nspid(status) == [3739, 1]
    assert lvm.parse_nspid("Name:\tbash\n") == []


@pytest.mark.parametrize(
    ("nspid", "expected"), [([3739, 1], True), ([3800, 17], False), ([1], False), ([], False)]
)
def test_is_namespace_init(lvm: ModuleType, nspid: list[int], expected: bool) -> None:
    assert lvm.is_namespace_init(nspid) is expected


def test_mounts_under_decodes_escapes_and_ignores_siblings(lvm: ModuleType) -> None:
    mounts = (
        "/dev/vda / ext4 rw 0 0\n"
        "proc /var/lib/localvm/lvtest/rootfs/proc proc rw 0 0\n"
        "tmpfs /var/lib/localvm/lvtest2/rootfs/tmp tmpfs rw 0 0\n"
        "tmpfs /var/lib/localvm/lvtest/my\\040dir tmpfs rw 0 0\n"
    )
    assert lvm.mounts_under(mounts, Path("/var/lib/localvm/lvtest")) == [
        "/var/lib/localvm/lvtest/rootfs/proc",
        "/var/lib/localvm/lvtest/my dir",
    ]
    assert lvm.mounts_under(mounts, Path("/srv")) == []


# --- rendering -------------------------------------------------------------------------------


def test_ssh_config(lvm: ModuleType, machine) -> None:
    text = lvm.render_ssh_config("lvtest", machine.vm_address, machine.key, machine.known_hosts)
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "Host lvtest"
    for expected in (
        "HostName 10.231.7.2",
        "User root",
        f"IdentityFile {machine.key}",
        "IdentitiesOnly yes",
        f"UserKnownHostsFile {machine.known_hosts}",
        "StrictHostKeyChecking yes",
        "ConnectTimeout 5",
    ):
        assert expected in lines
    assert "StrictHostKeyChecking no" not in text


def test_ssh_config_quotes_paths_with_spaces(lvm: ModuleType) -> None:
    text = lvm.render_ssh_config(
        "vm", IPv4Address("10.0.0.2"), Path("/a b/key"), Path("/a b/known_hosts")
    )
    assert 'IdentityFile "/a b/key"' in text
    assert 'UserKnownHostsFile "/a b/known_hosts"' in text


def test_known_hosts_line_pins_the_vm_key(lvm: ModuleType) -> None:
    line = lvm.known_hosts_line(IPv4Address("10.231.7.2"), "ssh-ed25519 AAAAC3Nz root@lvtest\n")
    assert line == "10.231.7.2 ssh-ed25519 AAAAC3Nz\n"
    with pytest.raises(lvm.LocalVMError):
        lvm.known_hosts_line(IPv4Address("10.231.7.2"), "ssh-rsa AAAAB3 root@lvtest")
    with pytest.raises(lvm.LocalVMError):
        lvm.known_hosts_line(IPv4Address("10.231.7.2"), "")


def test_network_config(lvm: ModuleType, machine) -> None:
    text = lvm.render_network_config(machine)
    assert "Name=host0" in text
    assert "Address=10.231.7.2/24" in text
    assert "Gateway=10.231.7.1" in text
    # networkd applies the first matching file in lexical order: ours must beat the image's.
    assert lvm.NETWORK_FILE.startswith("etc/systemd/network/")
    assert Path(lvm.NETWORK_FILE).name < "80-container-host0.network"


def test_apt_sources(lvm: ModuleType) -> None:
    lines = lvm.render_apt_sources("http://deb.debian.org/debian").splitlines()
    assert lines == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]


def test_hosts_file_names_the_vm(lvm: ModuleType) -> None:
    assert "127.0.1.1\tlvtest" in lvm.render_hosts("lvtest").splitlines()


def test_base_marker(lvm: ModuleType) -> None:
    good = json.dumps({"recipe": lvm.base_recipe(), "built_at": 1.0})
    assert lvm.base_is_complete(good)
    assert not lvm.base_is_complete(None)
    assert not lvm.base_is_complete("{half")
    old = lvm.base_recipe() | {"format": lvm.BASE_FORMAT - 1}
    assert not lvm.base_is_complete(json.dumps({"recipe": old}))


# --- rootfs writes ---------------------------------------------------------------------------


def test_write_into_replaces_symlink_instead_of_following_it(lvm: ModuleType, tmp_path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    host_file = tmp_path / "host-resolv.conf"
    host_file.write_text("host\n")
    (rootfs / "etc/resolv.conf").symlink_to(host_file)
    lvm.write_into(rootfs, "etc/resolv.conf", "vm\n")
    assert host_file.read_text() == "host\n"
    assert not (rootfs / "etc/resolv.conf").is_symlink()
    assert (rootfs / "etc/resolv.conf").read_text() == "vm\n"


def test_write_into_refuses_symlinked_directory_leading_out(lvm: ModuleType, tmp_path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (rootfs / "etc").symlink_to(outside)
    with pytest.raises(lvm.LocalVMError, match="outside"):
        lvm.write_into(rootfs, "/etc/hostname", "x\n")
    assert list(outside.iterdir()) == []


def test_write_into_sets_mode(lvm: ModuleType, tmp_path) -> None:
    lvm.write_into(tmp_path, "root/.ssh/authorized_keys", "key\n", 0o600)
    assert (tmp_path / "root/.ssh/authorized_keys").stat().st_mode & 0o777 == 0o600


# --- preconditions and CLI ----------------------------------------------------------------------


def test_preconditions_met(lvm: ModuleType) -> None:
    assert lvm.precondition_problem("linux", 0, []) is None


@pytest.mark.parametrize(
    ("platform", "euid", "missing", "detail"),
    [
        ("darwin", 501, [], "(this is darwin)"),
        ("linux", 1000, [], "(not running as root)"),
        ("linux", 0, ["debootstrap"], "(missing: debootstrap)"),
        ("linux", 1000, ["debootstrap", "iptables"], "(missing: debootstrap, iptables)"),
    ],
)
def test_precondition_message(
    lvm: ModuleType, platform: str, euid: int, missing: list[str], detail: str
) -> None:
    message = lvm.precondition_problem(platform, euid, missing)
    assert message is not None
    assert "\n" not in message
    assert detail in message
    assert message.endswith("use the Vagrantfile: vagrant up")


def test_missing_tools(lvm: ModuleType) -> None:
    assert lvm.missing_tools({"ip": "/usr/sbin/ip", "debootstrap": None}) == ["debootstrap"]


def test_cli_defaults_from_environment(lvm: ModuleType, monkeypatch) -> None:
    monkeypatch.setenv("LOCALVM_NAME", "envvm")
    monkeypatch.setenv("LOCALVM_SUBNET", "10.231.4.0/24")
    args = lvm.parse_args(["address"])
    assert (args.name, args.subnet) == ("envvm", "10.231.4.0/24")


def test_cli_options_before_or_after_command(lvm: ModuleType, monkeypatch) -> None:
    monkeypatch.delenv("LOCALVM_NAME", raising=False)
    before = lvm.parse_args(["--name", "lvtest", "up"])
    assert before.name == "lvtest"
    after = lvm.parse_args(["up", "--name", "lvtest"])
    assert after.name == "lvtest"
    assert lvm.parse_args(["up"]).name == lvm.DEFAULT_NAME


def test_cli_ssh_keeps_remote_command(lvm: ModuleType) -> None:
    args = lvm.parse_args(["--name", "lvtest", "ssh", "--", "systemctl", "is-system-running"])
    assert args.remote[-2:] == ["systemctl", "is-system-running"]
    assert lvm.parse_args(["ssh"]).remote == []


def test_ssh_command_execs_ssh_with_config(lvm: ModuleType, machine, monkeypatch) -> None:
    machine.dir.mkdir(parents=True)
    machine.ssh_config.write_text("Host lvtest\n")
    calls = []
    monkeypatch.setattr(lvm, "vm_running", lambda _m: True)
    monkeypatch.setattr(lvm.os, "execvpe", lambda *a: calls.append(a))
    lvm.cmd_ssh(machine, lvm.parse_args(["ssh", "--", "apt-get", "update"]))
    assert calls[0][1] == ["ssh", "-F", str(machine.ssh_config), "lvtest", "apt-get", "update"]


def test_address_needs_no_root(lvm: ModuleType, monkeypatch, capsys) -> None:
    monkeypatch.setattr(lvm.os, "geteuid", lambda: 1000)
    assert lvm.main(["--name", "lvtest", "--subnet", "10.231.7.0/24", "address"]) == 0
    assert capsys.readouterr().out == "10.231.7.2\n"


def test_ssh_config_command_prints_path(lvm: ModuleType, capsys) -> None:
    assert lvm.main(["--name", "lvtest", "ssh-config"]) == 0
    assert capsys.readouterr().out == "/var/lib/localvm/lvtest/ssh_config\n"


def test_non_root_gets_one_line_and_exit_2(lvm: ModuleType, monkeypatch, capsys) -> None:
    monkeypatch.setattr(lvm.os, "geteuid", lambda: 1000)
    assert lvm.main(["--name", "lvtest", "status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("localvm: needs root on Linux")
    assert err.count("\n") == 1


def test_bad_name_is_an_error_not_a_traceback(lvm: ModuleType, capsys) -> None:
    assert lvm.main(["--name", "Bad_Name", "address"]) == 1
    assert capsys.readouterr().err.startswith("localvm: error: invalid VM name 'Bad_Name'")


def test_failed_command_reports_command_and_stderr(lvm: ModuleType) -> None:
    with pytest.raises(lvm.LocalVMError) as info:
        lvm.run(["sh", "-c", "echo boom >&2; exit 3"])
    assert "exit 3" in str(info.value)
    assert "sh -c" in str(info.value)
    assert "boom" in str(info.value)


def test_missing_program_is_an_error(lvm: ModuleType) -> None:
    with pytest.raises(lvm.LocalVMError, match="command not found"):
        lvm.run(["localvm-no-such-program"])
