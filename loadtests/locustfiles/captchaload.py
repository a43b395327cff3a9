"""What the captcha scenarios share: the user base class, the options, the thresholds hook.

Every scenario (one locustfile each, beside this module) imports it, which registers:
- options: --thresholds (env LOCUST_THRESHOLDS), --scenario, --enforce-thresholds,
  --oracle-secret-file (env CAPTCHA_ORACLE_SECRET_FILE), --report-dir, --ca-file;
- on the master (or the only process): the thresholds are checked when the run ends, a verdict
  table is printed and the exit code set (loadcheck.EXIT_THRESHOLDS on a breach);
- on each worker: its own request count, written to <report-dir>/workers/ at exit, so that a
  distributed run can be checked against the master's sum.
The oracle secret comes from the environment (CAPTCHA_ORACLE_SECRET) or a file; it is sent in
the X-Captcha-Oracle header only, never logged.
Every user verifies the server's certificate (chain and host name), never insecure: against the
CA file of LOADTEST_CA_FILE (a remote worker's: it wins over the master's option) or --ca-file
(run.py passes the config's CA, loadtests/target.py), else the system's trust store.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import gevent
import gevent.ssl
import loadcheck
from loadcheck import group_name
from locust import FastHttpUser, events
from locust import log as locust_log
from locust.env import Environment
from locust.exception import StopTest
from locust.runners import STATE_STOPPING, MasterRunner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

ORACLE_HEADER = "X-Captcha-Oracle"
ORACLE_ENV = "CAPTCHA_ORACLE_SECRET"
# loadtests/target.py's CA_ENV (this folder is copied alone to the loadgen hosts).
CA_ENV = "LOADTEST_CA_FILE"
DEFAULT_THRESHOLDS = Path(__file__).resolve().parents[1] / "thresholds.toml"
CREATED_KEYS = frozenset({"id", "image_url", "verify_url", "expires_in"})
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

log = logging.getLogger("loadtests")


class _State:
    """Per process: what the hooks need between events."""

    thresholds: loadcheck.Thresholds | None = None
    workers_seen = 0
    requests = 0
    failures = 0
    secret: str | None = None
    ca_file: str | None = None


_state = _State()


@events.init_command_line_parser.add_listener
def _add_options(parser: Any, **_: Any) -> None:
    parser.add_argument(
        "--thresholds",
        env_var="LOCUST_THRESHOLDS",
        default=str(DEFAULT_THRESHOLDS),
        include_in_web_ui=False,
        help="TOML file of pass/fail limits checked when the run ends",
    )
    parser.add_argument(
        "--scenario",
        default="",
        include_in_web_ui=False,
        help="the [scenario.NAME] table of the thresholds file (default: the locustfile's stem)",
    )
    parser.add_argument(
        "--enforce-thresholds",
        choices=["auto", "yes", "no"],
        default="auto",
        include_in_web_ui=False,
        help="set the exit code from the thresholds (auto: in --headless/--autostart runs)",
    )
    parser.add_argument(
        "--oracle-secret-file",
        env_var="CAPTCHA_ORACLE_SECRET_FILE",
        default="",
        include_in_web_ui=False,
        help=f"file holding the oracle secret (the {ORACLE_ENV} variable wins)",
    )
    parser.add_argument(
        "--report-dir",
        default="",
        include_in_web_ui=False,
        help="folder for summary.json and the workers' own counts",
    )
    parser.add_argument(
        "--ca-file",
        default="",
        include_in_web_ui=False,
        help=f"CA certificate(s) to verify the target against (the {CA_ENV} variable wins;"
        " default: the system's trust store)",
    )


def scenario_name(options: Any) -> str:
    if getattr(options, "scenario", ""):
        return options.scenario
    files = [Path(f).stem for f in str(getattr(options, "locustfile", "") or "").split(",") if f]
    return "+".join(files) or "default"


def _enforcing(options: Any) -> bool:
    mode = getattr(options, "enforce_thresholds", "auto")
    return mode == "yes" or (mode == "auto" and bool(options.headless or options.autostart))


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:  # used as a library: no command line, no verdict
        return
    if isinstance(environment.runner, WorkerRunner):
        environment.events.request.add_listener(_count_request)
        environment.events.quitting.add_listener(_write_worker_count)
        return
    try:
        # Read now, so that a bad file stops the run before any load is sent.
        _state.thresholds = loadcheck.load_thresholds(options.thresholds, scenario_name(options))
    except loadcheck.ThresholdsError as exc:
        sys.exit(f"loadtests: {exc}")
    hooks = environment.events

    def note_workers(**_: Any) -> None:  # spawning_complete passes no environment
        if isinstance(environment.runner, MasterRunner):
            _state.workers_seen = max(_state.workers_seen, environment.runner.worker_count)

    for event in (hooks.test_start, hooks.spawning_complete, hooks.test_stop):
        event.add_listener(note_workers)
    hooks.test_stop.add_listener(_verdict_at_test_stop)
    hooks.quitting.add_listener(_verdict_at_quit)


def _count_request(exception: BaseException | None = None, **_: Any) -> None:
    _state.requests += 1
    if exception is not None:
        _state.failures += 1


def _write_worker_count(environment: Environment, **_: Any) -> None:
    report_dir = getattr(environment.parsed_options, "report_dir", "")
    if not report_dir:
        return
    path = Path(report_dir) / "workers" / f"{environment.runner.client_id}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"requests": _state.requests, "failures": _state.failures}))
    except OSError as exc:  # a remote worker may not have the master's folder: not fatal
        log.warning("could not write this worker's count to %s: %s", path, exc.strerror)


def snapshot(stats: Any) -> loadcheck.RunSample:
    """The run's figures by request name (methods of one name merged)."""
    names: dict[str, loadcheck.NameSample] = {}
    for entry in stats.entries.values():
        names.setdefault(entry.name, loadcheck.NameSample()).add(
            entry.num_requests, entry.num_failures, dict(entry.response_times)
        )
    total = stats.total
    return loadcheck.RunSample(total.num_requests, total.num_failures, total.total_rps, names)


def _judge(environment: Environment) -> tuple[list[loadcheck.Check], int, loadcheck.RunSample]:
    run = snapshot(environment.runner.stats)
    checks = loadcheck.evaluate(_state.thresholds, run)
    errors = (
        bool(environment.runner.exceptions)
        or locust_log.unhandled_greenlet_exception
        or environment.process_exit_code not in (None, 0)
    )
    return checks, loadcheck.exit_code(checks, errors), run


def _verdict_at_test_stop(environment: Environment, **_: Any) -> None:
    # Web UI: each test started from the page gets its verdict; the exit code is not touched.
    if _enforcing(environment.parsed_options):
        return
    checks, code, _ = _judge(environment)
    print(loadcheck.verdict_table(_state.thresholds, checks, code), flush=True)
    print("  (web UI: not enforced, the exit code stays locust's own)", flush=True)


def _verdict_at_quit(environment: Environment, **_: Any) -> None:
    # quitting comes after the last stats of every worker: the master's figures are final.
    checks, code, run = _judge(environment)
    enforcing = _enforcing(environment.parsed_options)
    if enforcing:
        print(loadcheck.verdict_table(_state.thresholds, checks, code), flush=True)
        environment.process_exit_code = code
    _write_final_csv(environment)
    report_dir = getattr(environment.parsed_options, "report_dir", "")
    if report_dir:
        summary = {
            "scenario": _state.thresholds.scenario,
            "host": environment.host,
            "users": environment.parsed_options.num_users,
            "thresholds": _state.thresholds.source,
            "enforced": enforcing,
            "exit_code": code if enforcing else None,
            "workers": _state.workers_seen,
            "requests": run.requests,
            "failures": run.failures,
            "requests_per_s": run.requests_per_s,
            "names": {
                name: {"requests": s.requests, "failures": s.failures, "p95_ms": s.percentile(0.95)}
                for name, s in sorted(run.names.items())
            },
            "checks": [vars(check) for check in checks],
        }
        path = Path(report_dir) / "summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2))


def _write_final_csv(environment: Environment) -> None:
    """locust rewrites its CSV files once a second, not at the end: the requests of the run's
    last second (users finishing their iteration at the stop) would be missing from them, and
    they would disagree with the verdict. Rewritten here from the final figures; the history
    file (a row per second) stays as locust wrote it."""
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix:
        return
    stats_csv = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for suffix, write in (
        ("stats", stats_csv.requests_csv),
        ("failures", stats_csv.failures_csv),
        ("exceptions", stats_csv.exceptions_csv),
    ):
        path = Path(f"{prefix}_{suffix}.csv")
        partial = path.with_name(path.name + ".partial")
        with partial.open("w", newline="") as out:
            write(csv.writer(out))
        # A new file: locust's own writer keeps its handle on the old one, whatever it does next.
        os.replace(partial, path)


def oracle_secret(environment: Environment) -> str:
    """From the environment, else from --oracle-secret-file; read once per process."""
    if _state.secret is None:
        secret = os.environ.get(ORACLE_ENV, "").strip()
        path = getattr(environment.parsed_options, "oracle_secret_file", "")
        if not secret and path:
            try:
                secret = Path(path).read_text().strip()
            except OSError as exc:
                log.error("cannot read the oracle secret file %s: %s", path, exc.strerror)
        _state.secret = secret
    return _state.secret


def ca_file(environment: Environment) -> str:
    """The CA file the users trust: $LOADTEST_CA_FILE, else --ca-file, else '' (the system's
    store); read once per process."""
    if _state.ca_file is None:
        option = getattr(environment.parsed_options, "ca_file", "") or ""
        _state.ca_file = os.environ.get(CA_ENV, "").strip() or option
    return _state.ca_file


def verifying_context_factory(ca: str) -> Any:
    """An ssl_context_factory for FastHttpUser: a context that verifies the chain and the host
    name, against ca alone when given (geventhttpclient passes its own bundle as cafile: replaced
    by ca), else against what it passes (the system's or certifi's store)."""

    def factory(cafile: str | None = None, **_: Any) -> gevent.ssl.SSLContext:
        context = gevent.ssl.create_default_context(cafile=ca or cafile)
        context.check_hostname = True
        context.verify_mode = gevent.ssl.CERT_REQUIRED
        return context

    return factory


def describe(resp: Any) -> str:
    """A failure message: the status and the error body (never a created captcha's body)."""
    if not resp.status_code:
        return f"no response: {resp.error}"
    if resp.status_code == 429:
        return (
            f"429 rate limited (Retry-After {resp.headers.get('Retry-After')} s):"
            " without a valid oracle header the API limits each client"
        )
    return f"{resp.status_code}: {(resp.text or '')[:120]}"


def expect_json(resp: Any, status: int) -> dict[str, Any] | None:
    """Success if the answer has `status` and a JSON object body; the body, else None."""
    if resp.status_code != status:
        resp.failure(f"expected {status}, got {describe(resp)}")
        return None
    try:
        body = resp.json()
    except ValueError:
        resp.failure(f"{status} without a JSON body")
        return None
    if not isinstance(body, dict):
        resp.failure(f"{status} with a JSON body that is not an object")
        return None
    resp.success()  # an expected 404 is a success too
    return body


def expect_error(resp: Any, status: int, code: str) -> None:
    body = expect_json(resp, status)
    if body is not None and body.get("error") != code:
        resp.failure(f"{status} with error {body.get('error')!r}, expected {code!r}")


class CaptchaUser(FastHttpUser):
    """A client of the captcha API; scenarios subclass it with their tasks."""

    abstract = True
    # The flow verifies with the right answer, which only the oracle gives.
    needs_oracle = True
    # Certificates are verified, always (locust's FastHttpUser does not by default).
    insecure = False

    def __init__(self, environment: Environment) -> None:
        # Before FastHttpUser.__init__, which makes the client with this factory.
        self.ssl_context_factory = verifying_context_factory(ca_file(environment))
        super().__init__(environment)

    def on_start(self) -> None:
        secret = oracle_secret(self.environment)
        if not secret and self.needs_oracle:
            self.environment.process_exit_code = loadcheck.EXIT_ERROR
            runner = self.environment.runner
            if not isinstance(runner, WorkerRunner) and runner.state != STATE_STOPPING:
                gevent.spawn(runner.quit)  # not from this greenlet: quit kills the users
            raise StopTest(f"no oracle secret: set {ORACLE_ENV} or --oracle-secret-file")
        self.oracle = {ORACLE_HEADER: secret} if secret else {}

    def create(self) -> dict[str, Any] | None:
        with self.client.post(
            "/api/captchas",
            json={},
            headers=self.oracle,
            name=group_name("/api/captchas"),
            catch_response=True,
        ) as resp:
            body = expect_json(resp, 201)
            if body is None:
                return None
            missing = CREATED_KEYS - body.keys()
            if missing:
                resp.failure(f"201 without {sorted(missing)}")
                return None
            if self.needs_oracle and "answer" not in body:
                resp.failure("201 without the answer: the oracle header was refused (secret?)")
                return None
            return body

    def image(self, captcha: dict[str, Any], status: int = 200, case: str = "") -> None:
        url = captcha["image_url"]
        with self.client.get(url, name=group_name(url, case), catch_response=True) as resp:
            if status != 200:
                expect_error(resp, status, "unknown_captcha")
            elif resp.status_code != 200:
                resp.failure(f"expected 200, got {describe(resp)}")
            elif not resp.headers.get("Content-Type", "").startswith("image/png"):
                resp.failure(f"200 with Content-Type {resp.headers.get('Content-Type')!r}")
            elif not (resp.content or b"").startswith(PNG_MAGIC):
                resp.failure("200 image/png whose body is not a PNG")
            else:
                resp.success()

    def verify(
        self,
        captcha: dict[str, Any],
        answer: str,
        *,
        valid: bool = True,
        status: int = 200,
        case: str = "",
    ) -> None:
        url = captcha["verify_url"]
        with self.client.post(
            url,
            json={"answer": answer},
            headers=self.oracle,
            name=group_name(url, case),
            catch_response=True,
        ) as resp:
            if status != 200:
                expect_error(resp, status, "unknown_captcha")
                return
            body = expect_json(resp, 200)
            if body is not None and body.get("valid") is not valid:
                resp.failure(f"valid is {body.get('valid')!r}, expected {valid}")

    def healthz(self) -> None:
        with self.client.get("/healthz", name="/healthz", catch_response=True) as resp:
            body = expect_json(resp, 200)
            if body is not None and body.get("status") != "ok":
                resp.failure(f"status is {body.get('status')!r}, store {body.get('store')!r}")
