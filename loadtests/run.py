"""Run a load test scenario with locust: headless, thresholds, reports, optionally distributed.

    python loadtests/run.py [--scenario flow] [--host URL] [--users N] [--spawn-rate R]
        [--duration 30s] [--tags smoke ...] [--workers N] [--ui] [--thresholds FILE]

Without --host the target is the local VM's nginx over https (https://<tools/localvm.py
address>, loadtests/target.py), its certificate verified against configs/local's CA, and the
oracle secret the one the deploy wrote (configs/local/.secrets/localvm/oracle_secret);
elsewhere set CAPTCHA_ORACLE_SECRET or --oracle-secret-file, and --ca-file (or
LOADTEST_CA_FILE) for a certificate of a private CA. Reports go to
loadtests/reports/<timestamp>-<scenario>/: report.html, stats_*.csv (with the full history),
summary.json. The exit code is the master's: 0 pass, 1 errors, 3 a threshold breached
(2: this script's usage errors, or locust's unhandled exception).

--workers N runs locust's distributed mode on this machine: one master and N worker
processes. Workers on other machines join with --remote-workers M (the master then waits for
N + M) and, there: locust -f loadtests/locustfiles/<scenario>.py --worker --master-host HOST.
--loadgen ENV runs --loadgen-workers K (default 1) workers on each host of configs/ENV's
`loadgen` group (deployed by roles/loadgen; started by loadgen.yml), besides any --workers:
without --host the target is the inventory's first lb host (else first app host) over https,
verified against configs/ENV's CA (the loadgen role gives it to the workers), and the oracle
secret configs/ENV/.secrets/<first app host>/oracle_secret. The workers' own counts,
logs and output come back into the report's workers/HOST/ (loadgen.py).
--ui starts the web UI (bound to 127.0.0.1) instead of a headless run: thresholds are then
printed at each test stop, and the exit code is locust's own.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOADTESTS = ROOT / "loadtests"
LOCUSTFILES = LOADTESTS / "locustfiles"
CONFIG = LOADTESTS / "locust.conf"
DEFAULT_THRESHOLDS = LOADTESTS / "thresholds.toml"
REPORTS = LOADTESTS / "reports"
SHARED_MODULES = {"captchaload", "loadcheck"}
ORACLE_ENV = "CAPTCHA_ORACLE_SECRET"
LOCUST = [sys.executable, "-m", "locust"]
EXIT_MEANING = {0: "pass", 1: "errors", 2: "unhandled exception", 3: "threshold breached"}

sys.path.insert(0, str(LOCUSTFILES))
sys.path.insert(0, str(LOADTESTS))
import loadgen  # noqa: E402
from loadcheck import ThresholdsError, load_thresholds  # noqa: E402

import target  # noqa: E402


def scenarios() -> dict[str, Path]:
    """Every locustfile but the shared modules; `all` runs them together."""
    found = {
        path.stem: path
        for path in sorted(LOCUSTFILES.glob("*.py"))
        if path.stem not in SHARED_MODULES and not path.stem.startswith("_")
    }
    return found


def locustfiles(scenario: str) -> str:
    known = scenarios()
    if scenario == "all":
        return ",".join(str(path) for path in known.values())
    if scenario not in known:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join([*known, 'all'])}")
    return str(known[scenario])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", default="flow", help="locustfile stem, or all")
    parser.add_argument("--host", help="base URL (default: https://<local VM address>)")
    parser.add_argument(
        "--ca-file",
        help=f"CA file to verify --host's certificate against (or ${target.CA_ENV}; default:"
        " the system's store; without --host: the config's CA, make -s tls-ca)",
    )
    parser.add_argument("--users", type=int, help="peak users (default: locust.conf)")
    parser.add_argument("--spawn-rate", type=float, help="users started per second")
    parser.add_argument("--duration", help="run time, e.g. 30s, 5m (default: locust.conf)")
    parser.add_argument("--tags", nargs="+", default=[], help="only tasks with these tags")
    parser.add_argument("--exclude-tags", nargs="+", default=[], help="no task with these tags")
    parser.add_argument("--workers", type=int, default=0, help="local worker processes")
    parser.add_argument("--remote-workers", type=int, default=0, help="workers from elsewhere")
    parser.add_argument(
        "--master-bind-host",
        help="address the master listens on (default 127.0.0.1; 0.0.0.0 for remote workers)",
    )
    parser.add_argument(
        "--master-port", type=int, help="default: a free port (5557 with --remote-workers)"
    )
    parser.add_argument(
        "--loadgen",
        metavar="ENV",
        help="also run workers on the loadgen hosts of configs/ENV (loadgen.yml)",
    )
    parser.add_argument(
        "--loadgen-workers", type=int, default=1, metavar="K", help="workers per loadgen host"
    )
    parser.add_argument(
        "--loadgen-master-host",
        default="",
        metavar="ADDR",
        help="the master's address for the loadgen hosts (default: theirs of the controller,"
        " from their SSH_CLIENT)",
    )
    parser.add_argument("--ui", action="store_true", help="web UI instead of a headless run")
    parser.add_argument("--web-port", type=int, default=8089)
    parser.add_argument(
        "--thresholds",
        default=os.environ.get("LOCUST_THRESHOLDS", str(DEFAULT_THRESHOLDS)),
        help="thresholds file (default: $LOCUST_THRESHOLDS or loadtests/thresholds.toml)",
    )
    parser.add_argument("--oracle-secret-file", help=f"default: ${ORACLE_ENV}, or the VM's")
    parser.add_argument("--reports-root", type=Path, default=REPORTS)
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("extra", nargs="*", help="after --: more locust options (master)")
    args = parser.parse_args(argv)
    # Tags may come comma-separated too (make ... TAGS=smoke,load).
    args.tags = [t for item in args.tags for t in item.split(",") if t]
    args.exclude_tags = [t for item in args.exclude_tags for t in item.split(",") if t]
    # locust runs from the repository's root: paths given relative to here must survive that.
    args.thresholds = str(Path(args.thresholds).resolve())
    args.reports_root = args.reports_root.resolve()
    if args.oracle_secret_file:
        args.oracle_secret_file = str(Path(args.oracle_secret_file).resolve())
    if args.workers < 0 or args.remote_workers < 0:
        parser.error("--workers and --remote-workers must be >= 0")
    if args.remote_workers and args.ui:
        parser.error("--remote-workers is for headless runs; in the UI, workers just connect")
    if args.loadgen and args.ui:
        parser.error("--loadgen is for headless runs (the workers' time limit is the run's)")
    if args.loadgen_workers < 1:
        parser.error("--loadgen-workers must be >= 1")
    return args


@dataclass
class Plan:
    master: list[str]
    workers: list[list[str]] = field(default_factory=list)
    report_dir: Path = Path()
    # Where the master and the local workers run (loadgen: the reports' root, see below).
    cwd: Path = ROOT
    # loadgen.yml's steps (--loadgen): start the remote workers, collect their files.
    loadgen_start: list[str] = field(default_factory=list)
    loadgen_collect: list[str] = field(default_factory=list)
    # What the loadgen run is (summary.json's `loadgen`): env, hosts, master, target, ...
    loadgen: dict[str, Any] = field(default_factory=dict)
    remote_workers: int = 0


def run_seconds(args: argparse.Namespace) -> int:
    """The run's duration: --duration, else locust.conf's run-time."""
    if args.duration:
        return loadgen.parse_duration(args.duration)
    for line in CONFIG.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "run-time":
            return loadgen.parse_duration(value)
    raise ValueError(f"no run-time in {CONFIG}")


def build_plan(
    args: argparse.Namespace,
    host: str | target.Target,
    report_dir: Path,
    master_port: int | None = None,
    setup: loadgen.Setup | None = None,
) -> Plan:
    """The locust command lines: one master (or the only process) and the local workers; with
    a loadgen setup, loadgen.yml's command lines too. host: the target (a bare URL: the
    system's trust store)."""
    if isinstance(host, str):
        host = target.Target(host.rstrip("/"), None, "--host")
    ca = host.ca_file
    files = locustfiles(args.scenario)
    cmd = [*LOCUST, "--config", str(CONFIG), "-f", files, "--host", host.url]
    # The users verify the certificate against it; the master sends it to its local workers
    # (a loadgen host's workers use their own copy: roles/loadgen, LOADTEST_CA_FILE).
    if ca:
        cmd += ["--ca-file", str(ca)]
    if args.users is not None:
        cmd += ["--users", str(args.users)]
    if args.spawn_rate is not None:
        cmd += ["--spawn-rate", f"{args.spawn_rate:g}"]
    if args.duration:
        cmd += ["--run-time", args.duration]
    if args.tags:
        cmd += ["--tags", *args.tags]
    if args.exclude_tags:
        cmd += ["--exclude-tags", *args.exclude_tags]
    cmd += ["--scenario", args.scenario, "--thresholds", str(args.thresholds)]
    # The master sends its --report-dir to every worker, which writes its own count there. With
    # loadgen hosts it is the report's bare name, the master running from the reports' root:
    # each remote worker writes into its run's folder on its host (roles/loadgen) instead.
    cwd = report_dir.parent if setup else ROOT
    cmd += ["--report-dir", report_dir.name if setup else str(report_dir)]
    cmd += ["--html", str(report_dir / "report.html")]
    # Full history: a row per name and interval, not only the aggregate.
    cmd += ["--csv", str(report_dir / "locust"), "--csv-full-history"]
    if args.oracle_secret_file:
        cmd += ["--oracle-secret-file", str(args.oracle_secret_file)]
    if args.ui:
        cmd += ["--web-host", "127.0.0.1", "--web-port", str(args.web_port)]
    else:
        cmd += ["--headless"]
    remote = args.remote_workers + (setup.remote_workers if setup else 0)
    expected = args.workers + remote
    if not expected:
        return Plan(cmd + list(args.extra), [], report_dir)

    bind = args.master_bind_host or ("0.0.0.0" if remote else "127.0.0.1")
    port = master_port or args.master_port or 5557
    cmd += ["--master", "--master-bind-host", bind, "--master-bind-port", str(port)]
    if not args.ui:
        # A worker that never comes must not hang the run forever (loadgen: the playbook
        # connects to each host before its workers start).
        wait = loadgen.EXPECT_WORKERS_MAX_WAIT if setup else 60
        cmd += ["--expect-workers", str(expected), "--expect-workers-max-wait", str(wait)]
    connect = "127.0.0.1" if bind in ("0.0.0.0", "*", "") else bind
    worker = [
        *LOCUST,
        "-f",
        files,
        "--worker",
        "--master-host",
        connect,
        "--master-port",
        str(port),
    ]
    workers = [
        [*worker, "--logfile", str(report_dir / "workers" / f"worker-{n}.log")]
        for n in range(1, args.workers + 1)
    ]
    plan = Plan(cmd + list(args.extra), workers, report_dir, cwd, remote_workers=remote)
    if setup:
        # The master's address as the hosts reach it: given, or the one it is bound to, else
        # empty (each host takes the controller's address from its SSH_CLIENT).
        given = args.loadgen_master_host or ("" if bind in ("0.0.0.0", "*", "") else bind)
        start = loadgen.start_vars(
            setup,
            run_id=report_dir.name,
            target=host.url,
            files=loadgen.scenario_files(files),
            master_port=port,
            master_host=given,
            run_seconds=run_seconds(args),
            oracle_secret_file=args.oracle_secret_file or "",
            locust_version=locust_version(),
            ca_file=str(ca) if ca else "",
        )
        collect = loadgen.collect_vars(
            setup, run_id=report_dir.name, collect_dir=report_dir / "workers"
        )
        plan.loadgen_start = loadgen.playbook_command(setup.env_dir, start)
        plan.loadgen_collect = loadgen.playbook_command(setup.env_dir, collect)
        plan.loadgen = {
            "env": setup.env,
            "hosts": setup.hosts,
            "workers_per_host": setup.workers_per_host,
            "remote_workers": setup.remote_workers,
            "workers_expected": expected,
            "master": f"{bind}:{port}",
            "master_port": port,
            "master_host": given or "SSH_CLIENT",
            "target": host.url,
            "ca_file": str(ca) if ca else "",
            "run_id": report_dir.name,
            "locustfiles": start["loadgen_locustfiles"],
            "time_limit_s": start["loadgen_time_limit"],
        }
    return plan


def locust_version() -> str:
    """This controller's locust: the loadgen hosts must run the same."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("locust")
    except PackageNotFoundError:
        return "unknown"


def new_report_dir(root: Path, scenario: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = root / f"{stamp}-{scenario}", 1
    while path.exists():  # two runs in one second
        n += 1
        path = root / f"{stamp}-{scenario}-{n}"
    return path


def free_port(bind: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((bind, 0))
        return sock.getsockname()[1]


def resolve_host_and_secret(
    args: argparse.Namespace, setup: loadgen.Setup | None = None
) -> target.Target:
    """The target (loadtests/target.py): --host, else the local VM, else (--loadgen ENV) the
    inventory's; fills args.oracle_secret_file from the VM's secrets when it is the VM, from
    configs/ENV's with --loadgen ENV. Exits with the reason when there is none."""
    no_secret = not os.environ.get(ORACLE_ENV) and not args.oracle_secret_file
    try:
        if setup:
            env_secret = loadgen.secret_path(setup.env_dir, setup.inventory)
            if no_secret and env_secret.is_file():
                args.oracle_secret_file = str(env_secret)
            if args.host:
                return target.given_target(args.host, args.ca_file)
            return target.Target(setup.target, setup.ca_file, f"configs/{setup.env}")
        if args.host:
            return target.given_target(args.host, args.ca_file)
        found = target.vm_target()
    except target.TargetError as exc:
        sys.exit(f"run: {exc}" + ("" if args.host or setup else "; try make demo"))
    vm_secret = target.VM_SECRETS / "oracle_secret"
    if no_secret and vm_secret.is_file():
        args.oracle_secret_file = str(vm_secret)
    return found


def _readable(path: str) -> bool:
    try:
        return bool(Path(path).read_text().strip())
    except OSError:
        return False


# After a stop is asked, the master's time to stop by itself (writing its reports) before
# SIGTERM, then again before SIGKILL.
STOP_GRACE_S = 15.0


class StopRequest:
    """A stop asked by Ctrl+C or SIGTERM (CI systems, the e2e harness), heard whatever this
    process inherited: a background job of a non-interactive shell starts with SIGINT ignored.
    Installed before the master starts, so that it starts with the default dispositions too
    (exec resets a handler to the default, not an ignored signal)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.at = 0.0

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.ask)

    def ask(self, signum: int, _frame: object) -> None:
        if self.signum is None:
            self.signum, self.at = signum, time.monotonic()


def wait_master(master: subprocess.Popen, stop: StopRequest) -> int:
    """The master's exit code. On a stop: SIGINT to the master (it stops as on Ctrl+C, the HTML
    report included) unless Ctrl+C reached it with us; SIGTERM if it is still there after
    STOP_GRACE_S (locust's own handler: the reports but the HTML one); SIGKILL after as long."""
    steps = [
        (0.0, signal.SIGINT),
        (STOP_GRACE_S, signal.SIGTERM),
        (2 * STOP_GRACE_S, signal.SIGKILL),
    ]
    while True:
        try:
            return master.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        if stop.signum is None:
            continue
        waited = time.monotonic() - stop.at
        if steps and not steps[0][0]:
            name = signal.Signals(stop.signum).name
            print(f"run: {name}: stopping locust; it writes its reports", flush=True)
        while steps and waited >= steps[0][0]:
            _, signum = steps.pop(0)
            if signum == signal.SIGINT and stop.signum == signal.SIGINT:
                continue  # Ctrl+C in a terminal reaches the whole process group
            if signum != signal.SIGINT:
                name = signal.Signals(signum).name
                print(f"run: locust still runs {waited:.0f} s after the stop: {name}", flush=True)
            master.send_signal(signum)


def wait_all(master: subprocess.Popen, workers: list[subprocess.Popen], stop: StopRequest) -> int:
    """The master's exit code; workers get 15 s to follow it, then SIGTERM."""
    code = wait_master(master, stop)
    deadline = time.monotonic() + 15
    for worker in workers:
        try:
            worker.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=5)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    return code


def describe_loadgen(args: argparse.Namespace, plan: Plan) -> str:
    lg = plan.loadgen
    reach = (
        "the controller's address as each host sees it (its SSH_CLIENT)"
        if lg["master_host"] == "SSH_CLIENT"
        else lg["master_host"]
    )
    lines = [
        f"run: loadgen configs/{lg['env']}: {', '.join(lg['hosts'])} ({len(lg['hosts'])} host(s))"
        f" x {lg['workers_per_host']} worker(s) = {lg['remote_workers']} remote worker(s);"
        f" the master expects {lg['workers_expected']}"
        f" ({args.workers} local, {args.remote_workers} from --remote-workers)",
        f"run: master listens on {lg['master']}; the loadgen workers reach it at {reach};"
        f" killed after {lg['time_limit_s']} s if still running",
    ]
    return "\n".join(lines)


def print_remote_workers(plan: Plan) -> None:
    """What loadgen.yml runs on each host (the master's address: theirs, if not given)."""
    lg = plan.loadgen
    for host in lg["hosts"]:
        for n in range(1, lg["workers_per_host"] + 1):
            argv = loadgen.worker_argv(
                run_id=lg["run_id"],
                host=host,
                n=n,
                files=lg["locustfiles"],
                master_host=lg["master_host"]
                if lg["master_host"] != "SSH_CLIENT"
                else "$SSH_CLIENT",
                master_port=lg["master_port"],
                target=lg["target"],
            )
            print(f"# {host}, as {loadgen.ROLE_USER}: {shlex.join(argv)}")


def start_loadgen(plan: Plan) -> bool:
    """loadgen.yml's start step: True once every host started its workers."""
    log = plan.report_dir / "loadgen-start.log"
    print(
        f"run: starting the loadgen workers (ansible-playbook loadgen.yml; log {log})", flush=True
    )
    try:
        code, said = loadgen.run_step(plan.loadgen_start, log)
    except KeyboardInterrupt:
        print("run: interrupted while starting the loadgen workers", file=sys.stderr)
        return False
    for line in said:
        print(f"run: {line}", flush=True)
    if code:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        print("\n".join([f"run: loadgen.yml failed (exit {code}); its end:", *tail]))
    return code == 0


def collect_loadgen(plan: Plan) -> None:
    """loadgen.yml's collect step, then the workers' own counts against the master's total."""
    log = plan.report_dir / "loadgen-collect.log"
    print(f"run: collecting the loadgen workers' files (log {log})", flush=True)
    try:
        code, said = loadgen.run_step(plan.loadgen_collect, log)
    except KeyboardInterrupt:
        code, said = 130, []
    for line in said:
        print(f"run: {line}", flush=True)
    if code:
        print(f"run: loadgen.yml collect failed (exit {code}): see {log}")
    summary_path = plan.report_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        summary = None
    counts = loadgen.worker_counts(plan.report_dir / "workers")
    master_requests = summary.get("requests") if summary else None
    result = loadgen.counts_summary(counts, master_requests)
    for c in counts:
        print(f"run:   worker {c.where:<8} {c.worker}: {c.requests} requests, {c.failures} failed")
    if summary is None:
        print(f"run: no {summary_path} (the master did not finish a run)")
        return
    expected = plan.loadgen["workers_expected"]
    print(
        f"run: {summary.get('workers')} of {expected} worker(s) joined the master;"
        f" {len(counts)} own count(s), sum {result['worker_requests_sum']};"
        f" the master counted {master_requests}"
        + ("" if result["master_is_sum"] else "  <- NOT the workers' sum")
    )
    summary["loadgen"] = {**plan.loadgen, **result}
    summary_path.write_text(json.dumps(summary, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        load_thresholds(args.thresholds, args.scenario)  # fail here, not after the ramp-up
        locustfiles(args.scenario)
        if args.loadgen:
            run_seconds(args)  # the workers' time limit
    except (ThresholdsError, ValueError) as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 2
    setup = None
    if args.loadgen:
        try:
            setup = loadgen.discover(args.loadgen, args.loadgen_workers, need_target=not args.host)
        except loadgen.LoadgenError as exc:
            print(f"run: --loadgen {args.loadgen}: {exc}", file=sys.stderr)
            return 2
    host = resolve_host_and_secret(args, setup)
    if host.https and not args.dry_run:
        # Fail here with the reason, not in every request of the run.
        try:
            target.check_certificate(host.url, host.ca_file)
        except target.TargetError as exc:
            print(f"run: {exc}", file=sys.stderr)
            return 2
    report_dir = new_report_dir(args.reports_root, args.scenario)
    if args.master_port or args.remote_workers:
        port = None
    else:
        port = free_port("0.0.0.0" if setup else "127.0.0.1")
    plan = build_plan(args, host, report_dir, port, setup)
    if setup:
        print(describe_loadgen(args, plan), flush=True)
        if setup.target_host and not args.host:
            print(f"run: target {host.url}: {setup.target_host}'s default IPv4 address", flush=True)
    if args.dry_run:
        for cmd in [plan.master, *plan.workers]:
            print(shlex.join(cmd))
        if setup:
            print(shlex.join(plan.loadgen_start))
            print_remote_workers(plan)
            print(shlex.join(plan.loadgen_collect))
        return 0
    if not os.environ.get(ORACLE_ENV) and not args.oracle_secret_file:
        print(
            f"run: no oracle secret: set {ORACLE_ENV} or --oracle-secret-file"
            " (the flow verifies with the right answer, and the oracle lifts the rate limits)",
            file=sys.stderr,
        )
        return 2
    if not os.environ.get(ORACLE_ENV) and not _readable(args.oracle_secret_file):
        print(f"run: cannot read the oracle secret in {args.oracle_secret_file}", file=sys.stderr)
        return 2

    # Workers log there from their first line on.
    report_dir.mkdir(parents=True, exist_ok=True)
    if plan.workers or setup:
        (report_dir / "workers").mkdir(exist_ok=True)
    print(f"run: {args.scenario} against {host.url}; reports in {report_dir}", flush=True)
    if host.https:
        trust = host.ca_file or "the system's trust store"
        print(f"run: the users verify its certificate against {trust}", flush=True)
    stop = StopRequest()
    stop.install()
    master = subprocess.Popen(plan.master, cwd=plan.cwd)
    workers = [
        subprocess.Popen(cmd, cwd=plan.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        for cmd in plan.workers
    ]
    started = start_loadgen(plan) if setup else True
    if not started:
        # SIGTERM: the master quits cleanly, telling the workers that joined to quit too.
        master.terminate()
    code = wait_all(master, workers, stop)
    for n, worker in enumerate(workers, 1):
        if worker.returncode not in (0, None):
            print(f"run: worker {n} exited {worker.returncode}: see {plan.workers[n - 1][-1]}")
    meaning = EXIT_MEANING.get(code, "see the log")
    if setup:
        collect_loadgen(plan)
        if not started:
            code, meaning = 2, "the loadgen workers did not start"
    print(f"run: exit {code} ({meaning}); reports in {report_dir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
