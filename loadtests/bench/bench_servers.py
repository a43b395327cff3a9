"""nginx+uWSGI vs nginx+gunicorn vs each app server alone, in one run, as ratios.

Each configuration is its own app-server instance in the VM, started from the deployed venv
and env file (profiler off), one worker pinned to benchlib.APP_CPU, so that every figure is
per core of the app server:
- "uWSGI alone" / "gunicorn alone": plain HTTP on the VM's address (uWSGI --http11-socket);
- "nginx+uWSGI" / "nginx+gunicorn": the instance on a unix socket behind the VM's own nginx,
  through a temporary server block per instance in /etc/nginx/conf.d/ (checked with nginx -t,
  reloaded, removed at the end), wired as the deployed site (uwsgi_pass / proxy_pass).
The deployed app server and site stay as they are. wrk runs on this host pinned to
benchlib.FRONT_CPU, and nginx is pinned there too while it is measured.

First the load generator's ceiling: wrk against an nginx `return 200` block, nginx on the app
CPU (wrk's own ceiling) and on the front CPU (wrk and nginx sharing it, the front of the
"nginx+" configurations). A figure near its ceiling, or with the front CPU saturated while the
app CPU is not, was limited by the generator, not the server: the table says so. CPU shares
come from this host's /proc/stat, right for the local VM (one kernel, the same CPUs). Per
core is requests per CPU second of the instance's own processes (/proc/PID/stat in the VM),
so that other load on a shared machine does not lower it; the table names the figures during
which other processes took the app CPU.
Endpoints: /healthz (light) and a captcha's image.png (a fresh captcha each round, made through
the deployed site over https). The instances here are plain http on ports of their own (the
app servers' costs, not TLS's: bench_tls.py measures that). Rounds
alternate the configurations (medians), so that noise hits every one alike. A figure with a
non-2xx answer, or connect/timeout errors, is void.
Usage: make bench  (the VM must be deployed: make demo)
"""

from __future__ import annotations

import argparse
import re
import shlex
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchlib import (
    APP_CPU,
    CLOCK_TICKS,
    CPUS,
    FRONT_CPU,
    LOCALVM,
    ROOT,
    VENV,
    create_captcha,
    matching,
    on_vm,
    parse_wrk,
    pin,
    process_ticks,
    start_uwsgi,
    vm_address,
    vm_target,
    write_report,
    wrk_command,
)

APP_ROOT = "/srv/sample_app"
WORK = "/run/sample_app-bench"
NGINX_CONF = "/etc/nginx/conf.d/sample_app-bench.conf"
NGINX_PATTERN = "[n]ginx: "  # master and workers; the bracket keeps the shell itself out
SATURATED = 0.90  # a CPU busy this share of the measurement was the limit
NEAR_CEILING = 0.80  # a rate this close to its ceiling was the generator's
MIN_BUSY_FOR_PER_CORE = 0.50
MIN_SERVER_CPU = 0.20  # less of a core than this measured: too few ticks for a per-core figure
OTHERS_NOTED = 0.15  # share of the app CPU other processes took that the table reports
BASELINE = "nginx+uWSGI"  # the default deploy
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Config:
    name: str
    slug: str
    port: int
    server: str | None  # uwsgi, gunicorn, or None: nginx's own `return 200` (a ceiling)
    behind_nginx: bool
    nginx_cpu: int | None = None  # where nginx runs while this one is measured

    @property
    def ceiling_name(self) -> str:
        """Which ceiling bounds this configuration's figures."""
        return "front ceiling" if self.behind_nginx else "generator ceiling"


def configurations(port_base: int) -> tuple[list[Config], list[Config]]:
    """The measured configurations and the two ceilings."""
    servers = [
        Config("nginx+uWSGI", "nginx-uwsgi", port_base + 11, "uwsgi", True, FRONT_CPU),
        Config("nginx+gunicorn", "nginx-gunicorn", port_base + 12, "gunicorn", True, FRONT_CPU),
        Config("uWSGI alone", "uwsgi", port_base + 1, "uwsgi", False),
        Config("gunicorn alone", "gunicorn", port_base + 2, "gunicorn", False),
    ]
    ceilings = [
        Config("generator ceiling", "ceiling", port_base + 90, None, False, APP_CPU),
        Config("front ceiling", "ceiling", port_base + 90, None, True, FRONT_CPU),
    ]
    return servers, ceilings


# --- what runs in the VM ---------------------------------------------------------------------


def pidfile(config: Config) -> str:
    """An instance's pidfile (benchlib.start_uwsgi's naming; gunicorn's alike)."""
    return f"{WORK}/{config.port}.pid"


def instance_settings(config: Config) -> dict[str, str]:
    """What the instance changes in the deployed env file: no profiler, its own lazyinit."""
    return {"WSGIPROBE_PROFILER": "0", "WSGIPROBE_LAZYINIT_DIR": f"{WORK}/{config.slug}/lazyinit"}


def uwsgi_args(config: Config, address: str) -> str:
    """The deployed uwsgi.ini's options, but one process and this instance's socket."""
    bind = (
        f"--socket {WORK}/{config.slug}/app.sock --chmod-socket=666"
        if config.behind_nginx
        else f"--http11-socket {address}:{config.port}"
    )
    return (
        f"--strict --processes 1 --virtualenv {VENV} --module wsgiprobe.entrypoint:application"
        f" --enable-threads --py-call-uwsgi-fork-hooks --single-interpreter --buffer-size 32768"
        f" {bind} --vacuum"
    )


def gunicorn_command(config: Config, address: str) -> str:
    """One sync worker, pinned, daemonized, from the deployed venv with the deployed env file."""
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in instance_settings(config).items())
    bind = (
        f"unix:{WORK}/{config.slug}/app.sock" if config.behind_nginx else f"{address}:{config.port}"
    )
    return (
        f"{APP_ROOT}/bin/run-with-env env {exports} taskset -c {APP_CPU}"
        f" {VENV}/bin/gunicorn --workers 1 --worker-class sync --bind {bind}"
        f" --chdir {APP_ROOT} --user sample_app --group sample_app --no-control-socket"
        f" --pid {pidfile(config)} --error-logfile {WORK}/{config.port}.log --daemon"
        f" wsgiprobe.entrypoint:application"
    )


def start(config: Config, address: str) -> None:
    """One worker pinned to APP_CPU, daemonized, from the deployed venv and env file."""
    if config.server == "uwsgi":
        start_uwsgi(
            WORK, config.port, instance_settings(config), uwsgi_args(config, address), APP_CPU
        )
    elif config.server == "gunicorn":
        on_vm(gunicorn_command(config, address))
    else:
        raise ValueError(f"{config.name} has no app server")


def nginx_conf(address: str, configs: list[Config], ceiling_port: int) -> str:
    """Temporary server blocks: one per instance behind nginx, and the ceiling's."""
    blocks = ["# Written by loadtests/bench/bench_servers.py for one run, which then removes it.\n"]
    for config in configs:
        if not config.behind_nginx or config.server is None:
            continue
        socket = f"unix:{WORK}/{config.slug}/app.sock"
        if config.server == "uwsgi":
            passing = f"        include uwsgi_params;\n        uwsgi_pass {socket};\n"
        else:
            passing = (
                f"        proxy_pass http://{socket};\n"
                "        proxy_http_version 1.1;\n"
                '        proxy_set_header Connection "";\n'
                "        proxy_set_header Host $host;\n"
                "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
            )
        # No access log in any block: both servers pay the same, and nginx stays light.
        blocks.append(
            f"server {{\n    listen {address}:{config.port};\n    access_log off;\n"
            f"    location / {{\n{passing}    }}\n}}\n"
        )
    blocks.append(
        f"server {{\n    listen {address}:{ceiling_port};\n    access_log off;\n"
        f'    location / {{\n        default_type text/plain;\n        return 200 "ok\\n";\n'
        f"    }}\n}}\n"
    )
    return "\n".join(blocks)


CLEANUP = f"""
set +e
rm -f {NGINX_CONF}
nginx -t -q 2>/dev/null && systemctl reload nginx
for pidfile in {WORK}/*.pid; do
    pid=$(cat "$pidfile" 2>/dev/null) || continue
    kill -INT "$pid" 2>/dev/null  # uWSGI and gunicorn both stop at once on SIGINT
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null
done
rm -rf {WORK}
true
"""


def role_version(server: str) -> str:
    """The version the deploy pins (roles/<server>/defaults/main.yml)."""
    text = (ROOT / "roles" / server / "defaults" / "main.yml").read_text()
    match = re.search(rf"^{server}_version:\s*\"?([\w.]+)\"?", text, re.MULTILINE)
    if not match:
        raise ValueError(f"no {server}_version in roles/{server}/defaults/main.yml")
    return match.group(1)


def ensure_servers(install: bool) -> list[str]:
    """Both servers in the deployed venv; a deploy only installs the one it runs."""
    missing = on_vm(f"for s in uwsgi gunicorn; do test -x {VENV}/bin/$s || echo $s; done").split()
    for server in missing:
        if not install:
            sys.exit(
                f"bench: {VENV}/bin/{server} is missing: deploy once with APP_SERVER={server},"
                " or run without --no-install"
            )
        version = role_version(server)
        print(f"bench: installing {server}=={version} into {VENV} (the deploy's pin)", flush=True)
        if server == "uwsgi":  # built from source, as the uwsgi role does
            on_vm(
                "DEBIAN_FRONTEND=noninteractive apt-get install -y -q build-essential python3-dev"
            )
        on_vm(f"{VENV}/bin/pip install --quiet {server}=={version}")
    return missing


def prepare_vm(address: str, configs: list[Config], ceiling_port: int) -> None:
    conf_d = "grep -Eqs '^\\s*include /etc/nginx/conf.d/\\*.conf' /etc/nginx/nginx.conf"
    if not on_vm(f"{conf_d} && echo yes || true"):
        sys.exit("bench: the VM's nginx.conf does not include conf.d/*.conf")
    on_vm(CLEANUP)  # what an interrupted run may have left
    dirs = " ".join(f"{WORK}/{c.slug}/lazyinit" for c in configs if c.server)
    # The app user's: uWSGI binds its unix socket after dropping privileges.
    on_vm(f"mkdir -p {dirs} && chown -R sample_app: {WORK}/* && chmod 755 {WORK} {WORK}/*")
    on_vm(f"cat > {NGINX_CONF}", stdin=nginx_conf(address, configs, ceiling_port))
    check = subprocess.run([*LOCALVM, "ssh", "--", "nginx -t"], capture_output=True, text=True)
    if check.returncode != 0:
        on_vm(CLEANUP)
        sys.exit(f"bench: nginx -t refused the temporary blocks:\n{check.stderr}")
    on_vm("systemctl reload nginx")


# --- measuring -------------------------------------------------------------------------------


def cpu_times(stat: str) -> dict[int, tuple[int, int]]:
    """/proc/stat -> {cpu: (busy, total)} in jiffies (iowait counts as idle)."""
    times: dict[int, tuple[int, int]] = {}
    for line in stat.splitlines():
        match = re.match(r"cpu(\d+)\s+(.*)", line)
        if match:
            # user nice system idle iowait irq softirq steal (guest is inside user already)
            values = [int(v) for v in match.group(2).split()[:8]]
            idle = values[3] + values[4]
            times[int(match.group(1))] = (sum(values) - idle, sum(values))
    return times


def busy_share(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cpu: int):
    busy = after[cpu][0] - before[cpu][0]
    total = after[cpu][1] - before[cpu][1]
    return busy / total if total > 0 else 0.0


@dataclass
class Sample:
    rate: float
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    app_busy: float = 0.0
    front_busy: float = 0.0
    server_cpu: float | None = None  # CPU seconds of the instance's processes per second

    @property
    def hard_errors(self) -> int:
        """Connections refused or timed out: requests that were never answered."""
        return self.socket_errors.get("connect", 0) + self.socket_errors.get("timeout", 0)


def server_ticks(config: Config) -> int:
    """CPU ticks so far of an instance's master and workers (and of its exited workers)."""
    return process_ticks(
        on_vm(
            f"m=$(cat {pidfile(config)}); cat /proc/$m/stat;"
            " for c in $(pgrep -P $m); do cat /proc/$c/stat; done"
        )
    )


def measure(url: str, seconds: int, connections: int, config: Config | None = None) -> Sample:
    ticks = server_ticks(config) if config is not None and config.server else None
    before = cpu_times(Path("/proc/stat").read_text())
    started = time.monotonic()
    proc = subprocess.run(wrk_command(url, seconds, connections), capture_output=True, text=True)
    elapsed = time.monotonic() - started
    after = cpu_times(Path("/proc/stat").read_text())
    server_cpu = None
    if ticks is not None:  # read after wrk: an idle server adds nothing meanwhile
        server_cpu = (server_ticks(config) - ticks) / CLOCK_TICKS / elapsed
    if proc.returncode != 0:
        sys.exit(f"bench: wrk failed on {url}:\n{proc.stderr}{proc.stdout}")
    result = parse_wrk(proc.stdout)
    if any(result.socket_errors.values()):
        print(f"  wrk socket errors: {result.socket_errors}")
    return Sample(
        result.rate,
        result.non_2xx,
        result.socket_errors,
        busy_share(before, after, APP_CPU),
        busy_share(before, after, FRONT_CPU),
        server_cpu,
    )


def fetch(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def preflight(url: str, expect: str) -> str:
    """Why this URL is not fit to measure ('' if it is); retries while the server starts."""
    deadline = time.monotonic() + 30
    while True:
        try:
            status, kind, body = fetch(url)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                return f"no answer within 30 s ({exc})"
            time.sleep(0.3)
    if status != 200:
        return f"status {status}: {body[:200]!r}"
    if expect == "png" and not (kind.startswith("image/png") and body.startswith(PNG_MAGIC)):
        return f"200 but not a PNG ({kind})"
    if expect == "healthy" and b'"status":"ok"' not in body.replace(b" ", b""):
        return f"200 but not healthy: {body[:200]!r}"
    return ""


# --- results (pure) --------------------------------------------------------------------------


@dataclass
class Figure:
    rate: float  # median requests/s
    rounds: list[float]
    void: str  # why the figure is no measurement, or ''
    app_busy: float
    front_busy: float
    per_core: float | None  # requests per CPU second of the app server (None: too little)
    limit: str = ""
    server_cpu: float | None = None  # the instance's own share of a core (None: not measured)


def figure(samples: list[Sample]) -> Figure:
    rate = statistics.median(s.rate for s in samples)
    app = statistics.median(s.app_busy for s in samples)
    front = statistics.median(s.front_busy for s in samples)
    non_2xx = sum(s.non_2xx for s in samples)
    hard = sum(s.hard_errors for s in samples)
    reasons = []
    if non_2xx:
        reasons.append(f"{non_2xx} non-2xx")
    if hard:
        reasons.append(f"{hard} connect/timeout errors")
    void = "; ".join(reasons)
    own = [s for s in samples if s.server_cpu is not None]
    server_cpu = statistics.median(s.server_cpu for s in own) if own else None
    if own:  # the server's own CPU time: right whatever else ran on its CPU
        timed = [s.rate / s.server_cpu for s in own if s.server_cpu >= MIN_SERVER_CPU]
        per_core = statistics.median(timed) if timed else None
    else:  # Extrapolating from a CPU idle most of the time would invent a figure.
        per_core = rate / app if app >= MIN_BUSY_FOR_PER_CORE else None
    return Figure(rate, [s.rate for s in samples], void, app, front, per_core, "", server_cpu)


def others_on_app_cpu(fig: Figure) -> float:
    """Share of the app CPU that processes other than the measured server took."""
    return fig.app_busy - fig.server_cpu if fig.server_cpu is not None else 0.0


def limit(fig: Figure, ceiling: Figure | None, one_cpu: bool, behind_nginx: bool) -> str:
    """What held a figure back: the server, the front (wrk, and nginx if in front), both or
    neither. A figure the front held back is a floor of what the server can do."""
    if fig.void:
        return "void"
    near = ceiling is not None and not ceiling.void and fig.rate >= NEAR_CEILING * ceiling.rate
    front = "front (floor)" if behind_nginx else "generator (floor)"
    if one_cpu:  # app and generator share the CPU: only the ceiling says something
        return front if near else "shared CPU"
    server = fig.app_busy >= SATURATED
    generator = near or fig.front_busy >= SATURATED
    if server and generator:
        return "server+" + front
    if generator:
        return front
    if server:
        return "server"
    return "neither: server partly idle"


def ceiling_limit(fig: Figure, config: Config) -> str:
    """Which side a ceiling stopped at: wrk's own limit, or nginx's `return 200`."""
    if fig.void:
        return "void"
    if config.behind_nginx:  # wrk and nginx share the front CPU
        return "front CPU" if fig.front_busy >= SATURATED else "neither"
    if fig.front_busy >= SATURATED:
        return "wrk"
    if fig.app_busy >= SATURATED:
        return "nginx (wrk can do more)"
    return "neither"


COMPARISONS = [
    ("gunicorn / uWSGI, behind nginx", "nginx+gunicorn", "nginx+uWSGI"),
    ("gunicorn / uWSGI, alone", "gunicorn alone", "uWSGI alone"),
    ("uWSGI: with nginx / alone", "nginx+uWSGI", "uWSGI alone"),
    ("gunicorn: with nginx / alone", "nginx+gunicorn", "gunicorn alone"),
]


def ratio(figures: dict[str, Figure], top: str, bottom: str) -> float | None:
    """None (void) when either side is void or missing."""
    a, b = figures.get(top), figures.get(bottom)
    if a is None or b is None or a.void or b.void or not b.rate:
        return None
    return a.rate / b.rate


def summarize(
    samples: dict[tuple[str, str], list[Sample]],
    servers: list[Config],
    ceilings: list[Config],
    one_cpu: bool,
) -> dict[str, dict[str, Figure]]:
    """{endpoint: {configuration: Figure}}, ceilings under the endpoint 'ceiling'."""
    out: dict[str, dict[str, Figure]] = {}
    for (endpoint, name), values in samples.items():
        out.setdefault(endpoint, {})[name] = figure(values)
    ceiling_figures = out.get("ceiling", {})
    by_name = {config.name: config for config in [*servers, *ceilings]}
    for endpoint, figures in out.items():
        for name, fig in figures.items():
            config = by_name[name]
            if endpoint == "ceiling":
                fig.limit = ceiling_limit(fig, config)
            else:
                bound = ceiling_figures.get(config.ceiling_name)
                fig.limit = limit(fig, bound, one_cpu, config.behind_nginx)
    return out


def _pct(value: float) -> str:
    return f"{value:.0%}"


def _listing(prefix: str, items: list[str], width: int = 96) -> list[str]:
    """prefix + the items, comma-separated, wrapped between items (never inside one)."""
    lines, line = [], prefix
    for n, item in enumerate(items):
        piece = item + ("," if n < len(items) - 1 else "")
        if len(line) + 1 + len(piece) > width and line.strip() != prefix.strip():
            lines.append(line)
            line = "   "
        line += " " + piece
    return [*lines, line]


def render(results: dict[str, dict[str, Figure]], servers: list[Config], heading: str) -> str:
    lines = [heading]
    for name, fig in results.get("ceiling", {}).items():
        lines.append(
            f"  {name:<18} {fig.rate:>9,.0f} req/s  (app CPU {_pct(fig.app_busy)},"
            f" front CPU {_pct(fig.front_busy)}), limit: {fig.limit}"
            + (f" ({fig.void})" if fig.void else "")
        )
    lines.append("")
    lines.append(
        f"  {'endpoint':<9}{'configuration':<16}{'req/s':>9}{'vs ' + BASELINE:>16}"
        f"{'per core':>10}{'server':>8}{'app CPU':>9}{'front CPU':>11}  limit"
    )
    for endpoint, figures in results.items():
        if endpoint == "ceiling":
            continue
        for config in servers:
            fig = figures.get(config.name)
            if fig is None:
                continue
            r = ratio(figures, config.name, BASELINE)
            lines.append(
                f"  {endpoint:<9}{config.name:<16}{fig.rate:>9,.0f}"
                f"{(f'{r:.2f}' if r is not None else 'void'):>16}"
                f"{(f'{fig.per_core:,.0f}' if fig.per_core is not None else '-'):>10}"
                f"{(_pct(fig.server_cpu) if fig.server_cpu is not None else '-'):>8}"
                f"{_pct(fig.app_busy):>9}{_pct(fig.front_busy):>11}  {fig.limit}"
                + (f" ({fig.void})" if fig.void else "")
            )
    endpoints = [e for e in results if e != "ceiling"]
    lines.append("")
    lines.append(f"  {'ratio':<34}" + "".join(f"{e:>10}" for e in endpoints))
    for label, top, bottom in COMPARISONS:
        cells = []
        for endpoint in endpoints:
            r = ratio(results[endpoint], top, bottom)
            cells.append(f"{r:>10.2f}" if r is not None else f"{'void':>10}")
        lines.append(f"  {label:<34}" + "".join(cells))
    floors = [
        f"{endpoint}/{name}"
        for endpoint in endpoints
        for name, fig in results[endpoint].items()
        if "(floor)" in fig.limit
    ]
    lines.append("")
    if floors:
        lines += _listing("  the generator (or nginx beside it) was the bottleneck:", floors)
        lines.append("  those figures are floors of the server's, and their ratios too")
    else:
        lines.append("  the generator was not the bottleneck of any figure")
    shared = [
        f"{endpoint}/{name} {others_on_app_cpu(fig):.0%}"
        for endpoint in endpoints
        for name, fig in results[endpoint].items()
        if others_on_app_cpu(fig) >= OTHERS_NOTED
    ]
    if shared:
        lines.append("  other processes took the app CPU (a noisy machine: per core counts the")
        lines += _listing("  server's own CPU time only):", shared)
    voids = [
        f"{endpoint}/{name}"
        for endpoint, figures in results.items()
        for name, fig in figures.items()
        if fig.void
    ]
    lines += _listing("  void figures:", voids or ["none"])
    return "\n".join(lines)


def report_data(results: dict[str, dict[str, Figure]], settings: dict[str, object]) -> dict:
    endpoints = [e for e in results if e != "ceiling"]
    return {
        **settings,
        "figures": {
            endpoint: {name: asdict(fig) for name, fig in figures.items()}
            for endpoint, figures in results.items()
        },
        "ratios": {
            label: {endpoint: ratio(results[endpoint], top, bottom) for endpoint in endpoints}
            for label, top, bottom in COMPARISONS
        },
    }


def rotated(items: list[Config], turn: int) -> list[Config]:
    """A different first configuration each round: no one is always measured first."""
    shift = turn % len(items)
    return items[shift:] + items[:shift]


# --- the run ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--port-base", type=int, default=9200)
    parser.add_argument(
        "--no-install", action="store_true", help="fail instead of pip installing a missing server"
    )
    args = parser.parse_args()

    address = vm_address()
    site = vm_target()  # the deployed site (https): it makes the captchas
    servers, ceilings = configurations(args.port_base)
    installed = ensure_servers(not args.no_install)
    prepare_vm(address, servers, ceilings[0].port)
    samples: dict[tuple[str, str], list[Sample]] = {}
    every = f"0-{CPUS - 1}"

    def run(endpoint: str, config: Config, path: str, round_: int) -> None:
        if config.nginx_cpu is not None:
            pin(matching(NGINX_PATTERN), str(config.nginx_cpu))
        print(f"bench: {endpoint}, round {round_}/{args.rounds}: {config.name}", flush=True)
        url = f"http://{address}:{config.port}{path}"
        samples.setdefault((endpoint, config.name), []).append(
            measure(url, args.seconds, args.connections, config)
        )

    try:
        for config in servers:
            start(config, address)
        image = create_captcha(site)
        checks = [(c, "/healthz", "healthy") for c in servers]
        checks += [(c, image, "png") for c in servers] + [(ceilings[0], "/", "ok")]
        for config, path, expect in checks:
            problem = preflight(f"http://{address}:{config.port}{path}", expect)
            if problem:  # also the warm-up: the lazy init runs on these requests
                sys.exit(f"bench: {config.name} {path}: {problem}")
        for round_ in range(1, args.rounds + 1):
            for config in ceilings:
                run("ceiling", config, "/", round_)
        for endpoint in ("light", "captcha"):
            for round_ in range(1, args.rounds + 1):
                # A fresh captcha each round: never near its TTL.
                path = "/healthz" if endpoint == "light" else create_captcha(site)
                for config in rotated(servers, round_):
                    run(endpoint, config, path, round_)
    finally:
        on_vm(CLEANUP)  # first: the VM must not keep the extra site whatever fails next
        pin(matching(NGINX_PATTERN), every)

    results = summarize(samples, servers, ceilings, one_cpu=CPUS < 2)
    print()
    print(
        render(
            results,
            servers,
            f"app servers, 1 worker each on CPU {APP_CPU}; wrk -c{args.connections} on CPU"
            f" {FRONT_CPU}; median of {args.rounds} rounds of {args.seconds} s\n"
            "  per core: requests per CPU second of the app server's own processes;"
            " server: its share of a core",
        )
    )
    settings = {
        "seconds": args.seconds,
        "rounds": args.rounds,
        "connections": args.connections,
        "app_cpu": APP_CPU,
        "front_cpu": FRONT_CPU,
        "installed_for_the_bench": installed,
        "samples": {f"{e} / {n}": [asdict(s) for s in v] for (e, n), v in samples.items()},
    }
    print(f"  written to {write_report('bench', report_data(results, settings))}")
    void = any(fig.void for figures in results.values() for fig in figures.values())
    return 1 if void else 0


if __name__ == "__main__":
    sys.exit(main())
