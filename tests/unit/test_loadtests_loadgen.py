"""run.py --loadgen: the inventory's hosts, the plan with loadgen workers, the workers' command
line (as roles/loadgen builds it), the secret's path, the counts; no Ansible run, no host."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadtests_import import ROOT, load

run = load("run")
loadgen = run.loadgen
ROLE = ROOT / "roles/loadgen"
REPORT = Path("/r/20260101-000000-flow")
TARGET = "http://10.231.2.2:80"

# ansible-inventory -i configs/lab --list, trimmed.
LAB = {
    "_meta": {"hostvars": {"app1": {"ansible_host": "{{ lab }}2"}}},
    "all": {"children": ["ungrouped", "lb", "store", "app", "loadgen"]},
    "app": {"hosts": ["app1", "app2"]},
    "lb": {"hosts": ["lb1"]},
    "loadgen": {"hosts": ["app1", "app2"]},
    "store": {"hosts": ["lb1"]},
}


def setup(workers_per_host: int = 1, inventory: dict[str, Any] = LAB) -> Any:
    inv = loadgen.parse_inventory(inventory)
    return loadgen.Setup("lab", ROOT / "configs/lab", inv, workers_per_host, TARGET, "lb1")


def plan(*argv: str, port: int | None = 41000) -> Any:
    args = run.parse_args(["--loadgen", "lab", *argv])
    # As run.main has it: discover(ENV, --loadgen-workers) made the setup.
    return run.build_plan(args, TARGET, REPORT, port, setup(args.loadgen_workers))


def option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def extra_vars(cmd: list[str]) -> dict[str, Any]:
    return json.loads(option(cmd, "-e"))


# The inventory


def test_inventory_groups_and_their_hosts() -> None:
    inv = loadgen.parse_inventory(LAB)
    assert inv.hosts("loadgen") == ["app1", "app2"]
    assert inv.hosts("lb") == ["lb1"]
    assert inv.hosts("nope") == []
    assert set(inv.hosts("all")) == {"lb1", "app1", "app2"}
    assert inv.hostvars["app1"]["ansible_host"] == "{{ lab }}2"


def test_children_count_once_in_order() -> None:
    data = {
        "loadgen": {"hosts": ["gen0"], "children": ["east", "west"]},
        "east": {"hosts": ["gen1", "gen2"]},
        "west": {"hosts": ["gen2", "gen3"], "children": ["loadgen"]},  # a loop: ignored
    }
    assert loadgen.parse_inventory(data).hosts("loadgen") == ["gen0", "gen1", "gen2", "gen3"]


def test_target_is_the_first_lb_host_else_the_first_app_host() -> None:
    assert loadgen.target_host(loadgen.parse_inventory(LAB)) == "lb1"
    single = {"app": {"hosts": ["localvm"]}, "loadgen": {"hosts": ["localvm"]}}
    assert loadgen.target_host(loadgen.parse_inventory(single)) == "localvm"
    with pytest.raises(loadgen.LoadgenError, match="no lb nor app host"):
        loadgen.target_host(loadgen.parse_inventory({"loadgen": {"hosts": ["gen1"]}}))


def test_secret_is_the_first_app_hosts() -> None:
    env_dir = ROOT / "configs/lab"
    path = loadgen.secret_path(env_dir, loadgen.parse_inventory(LAB))
    assert path == env_dir / ".secrets/app1/oracle_secret"
    with pytest.raises(loadgen.LoadgenError, match="no app host"):
        loadgen.secret_path(env_dir, loadgen.parse_inventory({"loadgen": {"hosts": ["g"]}}))


def test_the_real_lab_inventory_has_loadgen_hosts() -> None:
    data = yaml.safe_load((ROOT / "configs/lab/hosts.yml").read_text())["all"]["children"]
    assert list(data["loadgen"]["hosts"]) == ["app1", "app2"]


# Ansible's answers


def test_adhoc_json_with_the_task_profile_around_it() -> None:
    answer = {
        "plays": [
            {
                "tasks": [
                    {
                        "hosts": {
                            "lb1": {
                                "ansible_facts": {"ansible_default_ipv4": {"address": "10.0.0.5"}}
                            }
                        }
                    }
                ]
            }
        ]
    }
    output = (
        "Wednesday 02 December 2026  07:30:58 +0000 (0:00:00.029)  0:00:00.029 ****\n"
        + json.dumps(answer, indent=4)
        + "\nsetup ---------- 2.14s\n"
    )
    result = loadgen.adhoc_result(output, "lb1")
    assert loadgen.default_ipv4(result, "lb1") == "10.0.0.5"
    with pytest.raises(loadgen.LoadgenError, match="no result for app1"):
        loadgen.adhoc_result(output, "app1")
    with pytest.raises(loadgen.LoadgenError, match="no result"):
        loadgen.adhoc_result("ERROR! no inventory", "lb1")


def test_unreachable_or_addressless_target() -> None:
    with pytest.raises(loadgen.LoadgenError, match="lb1: ssh: connect"):
        loadgen.default_ipv4({"unreachable": True, "msg": "ssh: connect refused"}, "lb1")
    with pytest.raises(loadgen.LoadgenError, match="no default IPv4"):
        loadgen.default_ipv4({"ansible_facts": {"ansible_default_ipv4": {}}}, "lb1")


def test_listen_port_from_the_inventory_else_the_nginx_default() -> None:
    assert loadgen.listen_port({"nginx_listen_port": 8080}, 80) == 8080
    assert loadgen.listen_port({"nginx_listen_port": "8081"}, 80) == 8081
    undefined = {"nginx_listen_port": "<< error 1 - 'nginx_listen_port' is undefined >>"}
    assert loadgen.listen_port(undefined, 80) == 80
    assert loadgen.nginx_default_port() == 80


# Durations and limits


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1h", 3600), ("90", 90), (" 2m10s ", 130)],
)
def test_run_times(text: str, seconds: int) -> None:
    assert loadgen.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10x", "m"])
def test_bad_run_times(text: str) -> None:
    with pytest.raises(ValueError, match="not a run time"):
        loadgen.parse_duration(text)


def test_the_time_limit_outlasts_the_wait_and_the_run() -> None:
    limit = loadgen.time_limit(30)
    assert limit > loadgen.EXPECT_WORKERS_MAX_WAIT + 30
    assert limit < 30 + 600  # still bounded by the run


# The plan


def test_master_expects_every_host_times_k_plus_the_local_workers() -> None:
    p = plan("--workers", "1", "--loadgen-workers", "3")
    cmd = p.master
    assert option(cmd, "--expect-workers") == str(2 * 3 + 1)
    assert option(cmd, "--expect-workers-max-wait") == str(loadgen.EXPECT_WORKERS_MAX_WAIT)
    assert option(cmd, "--master-bind-host") == "0.0.0.0"
    assert option(cmd, "--master-bind-port") == "41000"
    assert len(p.workers) == 1 and option(p.workers[0], "--master-host") == "127.0.0.1"
    assert p.remote_workers == 6
    assert p.loadgen["workers_expected"] == 7


def test_report_dir_is_relative_to_where_the_master_runs() -> None:
    # The master sends it to the workers: each writes its own count under its own folder.
    p = plan("--workers", "1")
    assert option(p.master, "--report-dir") == REPORT.name
    assert p.cwd == REPORT.parent
    assert option(p.master, "--html") == str(REPORT / "report.html")  # locust's own: absolute
    assert option(p.workers[0], "--logfile") == str(REPORT / "workers/worker-1.log")


def test_without_loadgen_nothing_changes() -> None:
    args = run.parse_args(["--workers", "1"])
    p = run.build_plan(args, TARGET, REPORT, 41000)
    assert option(p.master, "--report-dir") == str(REPORT)
    assert p.cwd == ROOT
    assert p.loadgen_start == [] and p.loadgen_collect == [] and p.loadgen == {}


def test_start_step_of_the_playbook() -> None:
    p = plan("--duration", "2m", "--scenario", "all", "--loadgen-workers", "2")
    cmd = p.loadgen_start
    assert cmd[0].endswith("ansible-playbook")
    assert option(cmd, "-i") == str(ROOT / "configs/lab")
    assert cmd[cmd.index("-i") + 2] == str(ROOT / "loadgen.yml")
    assert extra_vars(cmd) == {
        "loadgen_step": "start",
        "loadgen_run_id": REPORT.name,
        "loadgen_workers": 2,
        "loadgen_master_host": "",  # each host: the controller's address as it sees it
        "loadgen_master_port": 41000,
        "loadgen_target": TARGET,
        "loadgen_locustfiles": ["flow.py", "negative.py"],
        "loadgen_time_limit": loadgen.time_limit(120),
        "loadgen_oracle_secret_file": "",
        "loadgen_locust_version": run.locust_version(),
        "loadgen_ca_file": "",
    }


def test_duration_defaults_to_locust_conf() -> None:
    assert extra_vars(plan().loadgen_start)["loadgen_time_limit"] == loadgen.time_limit(30)


def test_master_address_given_or_the_bound_one() -> None:
    given = plan("--loadgen-master-host", "192.0.2.7").loadgen_start
    assert extra_vars(given)["loadgen_master_host"] == "192.0.2.7"
    bound = plan("--master-bind-host", "10.231.2.1")
    assert extra_vars(bound.loadgen_start)["loadgen_master_host"] == "10.231.2.1"
    assert option(bound.master, "--master-bind-host") == "10.231.2.1"


def test_the_secret_travels_as_a_path_only(tmp_path: Path) -> None:
    secret = tmp_path / "oracle_secret"
    secret.write_text("s3cr3t-value\n")
    p = plan("--oracle-secret-file", str(secret))
    assert extra_vars(p.loadgen_start)["loadgen_oracle_secret_file"] == str(secret)
    assert not any("s3cr3t" in arg for arg in [*p.loadgen_start, *p.master])


def test_collect_step_of_the_playbook() -> None:
    cmd = plan("--loadgen-workers", "2").loadgen_collect
    assert extra_vars(cmd) == {
        "loadgen_step": "collect",
        "loadgen_run_id": REPORT.name,
        "loadgen_workers": 2,
        "loadgen_collect_dir": str(REPORT / "workers"),
    }


def test_loadgen_needs_a_headless_run_and_a_worker(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run.parse_args(["--loadgen", "lab", "--ui"])
    assert "--loadgen is for headless runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run.parse_args(["--loadgen", "lab", "--loadgen-workers", "0"])
    assert "--loadgen-workers must be >= 1" in capsys.readouterr().err


def test_an_unknown_env_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--loadgen", "no-such-env", "--dry-run"]) == 2
    assert "no configs/no-such-env" in capsys.readouterr().err


def test_the_secret_defaults_to_the_envs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAPTCHA_ORACLE_SECRET", raising=False)
    inv = loadgen.parse_inventory(LAB)
    (tmp_path / ".secrets/app1").mkdir(parents=True)
    (tmp_path / ".secrets/app1/oracle_secret").write_text("x\n")
    lab = loadgen.Setup("lab", tmp_path, inv, 1, TARGET, "lb1")
    args = run.parse_args(["--loadgen", "lab"])
    assert run.resolve_host_and_secret(args, lab).url == TARGET
    assert args.oracle_secret_file == str(tmp_path / ".secrets/app1/oracle_secret")
    # --host wins over the inventory's target; the environment's secret over the file.
    monkeypatch.setenv("CAPTCHA_ORACLE_SECRET", "from-env")
    args = run.parse_args(["--loadgen", "lab", "--host", "http://other:8080/"])
    assert run.resolve_host_and_secret(args, lab).url == "http://other:8080"
    assert args.oracle_secret_file is None


def test_the_configs_ca_reaches_the_master_and_the_workers_run_folder(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    args = run.parse_args(["--loadgen", "lab"])
    lab = setup()
    https = run.target.Target("https://10.231.2.2", ca, "configs/lab")
    p = run.build_plan(args, https, REPORT, 41000, lab)
    assert option(p.master, "--host") == "https://10.231.2.2"
    assert option(p.master, "--ca-file") == str(ca)  # the users' and the local workers'
    start = extra_vars(p.loadgen_start)
    assert start["loadgen_ca_file"] == str(ca)  # the role copies it into the run's folder
    assert start["loadgen_target"] == "https://10.231.2.2"
    assert p.loadgen["ca_file"] == str(ca)


@pytest.mark.parametrize(
    ("mode", "url", "has_ca"),
    [
        ("local-ca", "https://10.231.2.2", True),
        ("acme", "https://10.231.2.2", False),
        ("off", "http://10.231.2.2:8080", False),
    ],
)
def test_the_inventorys_tls_mode_chooses_the_scheme_and_the_ca(
    tmp_path: Path, mode: str, url: str, has_ca: bool
) -> None:
    ca = tmp_path / "lab" / ".secrets/tls-ca/ca.crt"
    ca.parent.mkdir(parents=True)
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    port = 8080 if mode == "off" else 443
    found, trust = loadgen.tls_target("lab", mode, "10.231.2.2", port, configs=tmp_path)
    assert (found, trust) == (url, ca.resolve() if has_ca else None)


def test_local_ca_without_its_file_asks_for_a_deploy(tmp_path: Path) -> None:
    (tmp_path / "lab").mkdir()
    with pytest.raises(run.target.TargetError, match="deploy first"):
        loadgen.tls_target("lab", "local-ca", "10.231.2.2", 443, configs=tmp_path)


def test_tls_mode_from_the_inventory_else_the_roles_default() -> None:
    hostvars = {"lb1": {"tls_mode": "off"}, "app1": {"tls_mode": "{{ x }}"}}
    inv = loadgen.parse_inventory({**LAB, "_meta": {"hostvars": hostvars}})
    assert loadgen.tls_mode(inv, "lb1") == "off"
    default = yaml.safe_load((ROOT / "roles/tls/defaults/main.yml").read_text())["tls_mode"]
    assert loadgen.tls_mode(inv, "app1") == default  # a template: not read here
    assert loadgen.tls_mode(inv, "app2") == default


# The role: what the hosts run, and what run.py assumes of it


def _trusted(value: Any) -> Any:
    from ansible.template import trust_as_template

    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [_trusted(v) for v in value]
    if isinstance(value, dict):
        return {k: _trusted(v) for k, v in value.items()}
    return value


def _yaml(path: str) -> Any:
    return yaml.safe_load((ROLE / path).read_text())


def _render(expr: Any, **variables: Any) -> Any:
    """As Ansible templates it: the role's defaults and vars, then `variables`."""
    pytest.importorskip("ansible")
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    scope = {**_trusted(_yaml("defaults/main.yml")), **_trusted(_yaml("vars/main.yml"))}
    scope.update(variables)
    return Templar(loader=DataLoader(), variables=scope).template(_trusted(expr))


def _task(path: str, name: str) -> dict[str, Any]:
    return next(task for task in _yaml(path) if task["name"] == name)


def test_the_worker_command_line_is_the_roles() -> None:
    task = _task("tasks/start.yml", "Start the workers in the background")
    argv = task["ansible.builtin.command"]["argv"]
    for n in (1, 2):
        rendered = _render(
            argv,
            loadgen_run_id="20260101-000000-all",
            loadgen_locustfiles=["flow.py", "negative.py"],
            loadgen_master_address="10.231.2.1",
            loadgen_master_port=41000,
            loadgen_target=TARGET,
            inventory_hostname="app2",
            item=n,
        )
        assert rendered == loadgen.worker_argv(
            run_id="20260101-000000-all",
            host="app2",
            n=n,
            files=["flow.py", "negative.py"],
            master_host="10.231.2.1",
            master_port=41000,
            target=TARGET,
        )
    assert rendered[rendered.index("-f") + 1] == (
        "/srv/loadgen/locustfiles/flow.py,/srv/loadgen/locustfiles/negative.py"
    )
    # In the background, bounded, as the unprivileged user, from the runs' folder.
    assert task["poll"] == 0 and "async" in task
    assert task["become_user"] == "{{ loadgen_user }}"
    assert _render(task["ansible.builtin.command"]["chdir"]) == loadgen.ROLE_RUNS_DIR


def test_the_mirrored_paths_are_the_roles_defaults() -> None:
    assert _render("{{ loadgen_root }}") == loadgen.ROLE_ROOT
    assert _render("{{ loadgen_runs_dir }}") == loadgen.ROLE_RUNS_DIR
    assert _render("{{ loadgen_user }}") == loadgen.ROLE_USER


def test_the_workers_locust_is_the_controllers() -> None:
    pin = re.search(r"^locust==(\S+)$", (ROOT / "requirements-dev.txt").read_text(), re.M)
    assert pin is not None
    assert _yaml("defaults/main.yml")["loadgen_locust_version"] == pin.group(1)


def test_every_variable_run_py_passes_is_in_the_steps_spec() -> None:
    specs = _yaml("meta/argument_specs.yml")["argument_specs"]
    p = plan()
    for cmd, step in ((p.loadgen_start, "start"), (p.loadgen_collect, "collect")):
        passed = set(extra_vars(cmd)) - {"loadgen_step"}
        assert passed - set(specs[step]["options"]) - set(specs["main"]["options"]) == set()
        assert (ROLE / f"tasks/{step}.yml").is_file()


# The counts


def test_worker_counts_local_and_collected(tmp_path: Path) -> None:
    workers = tmp_path / "workers"
    (workers / "app1/workers").mkdir(parents=True)
    (workers / "app1/async").mkdir()
    (workers / "vm_local1.json").write_text('{"requests": 5, "failures": 1}')
    (workers / "app1/workers/lg2_ab.json").write_text('{"requests": 7, "failures": 0}')
    (workers / "app1/workers/broken.json").write_text("{")
    (workers / "app1/async/j123.456").write_text('{"rc": 0}')
    counts = loadgen.worker_counts(workers)
    assert [(c.where, c.worker, c.requests) for c in counts] == [
        ("app1", "lg2_ab", 7),
        ("local", "vm_local1", 5),
    ]
    summary = loadgen.counts_summary(counts, 12)
    assert summary["worker_requests_sum"] == 12 and summary["worker_failures_sum"] == 1
    assert summary["master_is_sum"] is True
    assert loadgen.counts_summary(counts, 13)["master_is_sum"] is False
    assert loadgen.counts_summary([], None)["master_is_sum"] is None
