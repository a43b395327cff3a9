"""Run a load test scenario with locust: headless, thresholds, reports, optionally distributed.

    python loadtests/run.py [--scenario flow] [--host URL] [--users N] [--spawn-rate R]
        [--duration 30s] [--tags smoke ...] [--workers N] [--ui] [--thresholds FILE]

Without --host the target is the local VM's nginx (tools/localvm.py address) and the oracle
secret the one the deploy wrote (configs/local/.secrets/localvm/oracle_secret); elsewhere set
CAPTCHA_ORACLE_SECRET or --oracle-secret-file. Reports go to
loadtests/reports/<timestamp>-<scenario>/: report.html, stats_*.csv (with the full history),
summary.json. The exit code is the master's: 0 pass, 1 errors, 3 a threshold breached
(2: this script's usage errors, or locust's unhandled exception).

--workers N runs locust's distributed mode on this machine: one master and N worker
processes. Workers on other machines join with --remote-workers M (the master then waits for
N + M) and, there: locust -f loadtests/locustfiles/<scenario>.py --worker --master-host HOST.
--ui starts the web UI (bound to 127.0.0.1) instead of a headless run: thresholds are then
printed at each test stop, and the exit code is locust's own.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

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
from loadcheck import ThresholdsError, load_thresholds  # noqa: E402


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
    parser.add_argument("--host", help="base URL (default: http://<local VM address>)")
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
    parser.add_argument("--master-port", type=int, help="default: a free port (5557 if remote)")
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
    return args


@dataclass
class Plan:
    master: list[str]
    workers: list[list[str]] = field(default_factory=list)
    report_dir: Path = Path()


def build_plan(
    args: argparse.Namespace, host: str, report_dir: Path, master_port: int | None = None
) -> Plan:
    """The locust command lines: one master (or the only process) and the local workers."""
    files = locustfiles(args.scenario)
    cmd = [*LOCUST, "--config", str(CONFIG), "-f", files, "--host", host]
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
    cmd += ["--report-dir", str(report_dir), "--html", str(report_dir / "report.html")]
    # Full history: a row per name and interval, not only the aggregate.
    cmd += ["--csv", str(report_dir / "locust"), "--csv-full-history"]
    if args.oracle_secret_file:
        cmd += ["--oracle-secret-file", str(args.oracle_secret_file)]
    if args.ui:
        cmd += ["--web-host", "127.0.0.1", "--web-port", str(args.web_port)]
    else:
        cmd += ["--headless"]
    expected = args.workers + args.remote_workers
    if not expected:
        return Plan(cmd + list(args.extra), [], report_dir)

    bind = args.master_bind_host or ("0.0.0.0" if args.remote_workers else "127.0.0.1")
    port = master_port or args.master_port or 5557
    cmd += ["--master", "--master-bind-host", bind, "--master-bind-port", str(port)]
    if not args.ui:
        # A worker that never comes must not hang the run forever.
        cmd += ["--expect-workers", str(expected), "--expect-workers-max-wait", "60"]
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
    return Plan(cmd + list(args.extra), workers, report_dir)


def new_report_dir(root: Path, scenario: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = root / f"{stamp}-{scenario}", 1
    while path.exists():  # two runs in one second
        n += 1
        path = root / f"{stamp}-{scenario}-{n}"
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resolve_host_and_secret(args: argparse.Namespace) -> str:
    """The target URL; fills args.oracle_secret_file from the VM's secrets when it is the VM."""
    if args.host:
        return args.host.rstrip("/")
    from benchlib import SECRETS, vm_address  # the VM: only when no --host

    try:
        address = vm_address()
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"run: no --host and no local VM address ({exc}); try make demo")
    vm_secret = SECRETS / "oracle_secret"
    if not os.environ.get(ORACLE_ENV) and not args.oracle_secret_file and vm_secret.is_file():
        args.oracle_secret_file = str(vm_secret)
    return f"http://{address}"


def _readable(path: str) -> bool:
    try:
        return bool(Path(path).read_text().strip())
    except OSError:
        return False


def wait_all(master: subprocess.Popen, workers: list[subprocess.Popen]) -> int:
    """The master's exit code; workers get 15 s to follow it, then SIGTERM."""
    while True:
        try:
            code = master.wait()
            break
        except KeyboardInterrupt:
            # Ctrl+C reached every process of the group: the master writes its reports.
            continue
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        load_thresholds(args.thresholds, args.scenario)  # fail here, not after the ramp-up
        locustfiles(args.scenario)
    except (ThresholdsError, ValueError) as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 2
    host = resolve_host_and_secret(args)
    report_dir = new_report_dir(args.reports_root, args.scenario)
    port = None if args.master_port or args.remote_workers else free_port()
    plan = build_plan(args, host, report_dir, port)
    if args.dry_run:
        for cmd in [plan.master, *plan.workers]:
            print(shlex.join(cmd))
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
    (report_dir / "workers" if plan.workers else report_dir).mkdir(parents=True, exist_ok=True)
    print(f"run: {args.scenario} against {host}; reports in {report_dir}", flush=True)
    master = subprocess.Popen(plan.master, cwd=ROOT)
    workers = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        for cmd in plan.workers
    ]
    code = wait_all(master, workers)
    for n, worker in enumerate(workers, 1):
        if worker.returncode not in (0, None):
            print(f"run: worker {n} exited {worker.returncode}: see {plan.workers[n - 1][-1]}")
    print(f"run: exit {code} ({EXIT_MEANING.get(code, 'see the log')}); reports in {report_dir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
