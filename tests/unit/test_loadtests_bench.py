"""loadtests/bench/bench_servers.py's pure parts: wrk's output, CPU shares, void figures, limits,
ratios, the temporary nginx blocks and the instances' command lines. No VM here."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from loadtests_import import load

bench = load("bench/bench_servers")
Sample = bench.Sample

WRK_OK = """Running 5s test @ http://10.231.0.2:9211/healthz
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.95ms  247.74us   3.23ms   64.69%
    Req/Sec     4.02k   167.77     4.30k    76.19%
  20396 requests in 5.10s, 1.74MB read
Requests/sec:   3998.10
Transfer/sec:    847.33KB
"""
WRK_BAD = """Running 1s test @ http://10.231.0.2:9201/x
  1 threads and 4 connections
  4110 requests in 1.00s, 1.05MB read
  Socket errors: connect 2, read 317, write 0, timeout 3
  Non-2xx or 3xx responses: 4110
Requests/sec:   4109.24
Transfer/sec:      1.05MB
"""


def test_parse_wrk_clean_run() -> None:
    r = bench.parse_wrk(WRK_OK)
    assert (r.rate, r.requests, r.non_2xx, r.socket_errors) == (3998.10, 20396, 0, {})


def test_parse_wrk_errors() -> None:
    r = bench.parse_wrk(WRK_BAD)
    assert r.non_2xx == 4110
    assert r.socket_errors == {"connect": 2, "read": 317, "write": 0, "timeout": 3}


def test_parse_wrk_without_a_rate_is_an_error() -> None:
    with pytest.raises(ValueError, match="Requests/sec"):
        bench.parse_wrk("unable to connect to 10.231.0.2:9201 Connection refused")


STAT_BEFORE = """cpu  300 0 100 1000 0 0 0 0 0 0
cpu0 100 0 50 500 0 0 0 0 0 0
cpu1 200 0 50 500 0 0 0 0 0 0
intr 1 2 3
"""
STAT_AFTER = """cpu  500 0 200 1300 0 0 0 0 0 0
cpu0 110 0 60 680 0 0 0 0 0 0
cpu1 380 0 90 520 10 0 0 0 0 0
"""


def test_cpu_busy_share_per_cpu() -> None:
    before, after = bench.cpu_times(STAT_BEFORE), bench.cpu_times(STAT_AFTER)
    assert set(before) == {0, 1}  # the aggregate "cpu" line is not a CPU
    # cpu0: busy +20 of +200; cpu1: busy +220 of +250 (iowait counts as idle)
    assert bench.busy_share(before, after, 0) == pytest.approx(0.10)
    assert bench.busy_share(before, after, 1) == pytest.approx(220 / 250)
    assert bench.busy_share(before, before, 1) == 0.0


def samples(*rates: float, **kw: object) -> list:
    return [Sample(rate, **kw) for rate in rates]


def test_figure_is_the_median_and_void_on_any_non_2xx() -> None:
    fig = bench.figure(
        [Sample(100, app_busy=0.95), Sample(300, app_busy=0.97), Sample(200, 1, app_busy=0.96)]
    )
    assert fig.rate == 200 and fig.rounds == [100, 300, 200]
    assert fig.void == "1 non-2xx"
    assert fig.per_core == pytest.approx(200 / 0.96)


def test_connect_and_timeout_errors_void_a_figure_but_reads_do_not() -> None:
    closed = bench.figure(samples(50, 50, socket_errors={"read": 40}, app_busy=1.0))
    assert closed.void == ""  # a server closing its connections (HTTP/1.0, gunicorn sync)
    lost = bench.figure(samples(50, socket_errors={"connect": 1, "timeout": 2}, app_busy=1.0))
    assert lost.void == "3 connect/timeout errors"


def test_per_core_is_not_extrapolated_from_an_idle_cpu() -> None:
    assert bench.figure(samples(1000, app_busy=0.2)).per_core is None


def fig(rate: float, app: float = 0.0, front: float = 0.0, void: str = ""):
    return bench.Figure(rate, [rate], void, app, front, None)


@pytest.mark.parametrize(
    ("figure", "ceiling", "behind", "expected"),
    [
        (fig(250, app=0.99, front=0.1), fig(20000), False, "server"),
        (fig(9000, app=0.5, front=0.95), fig(20000), True, "front (floor)"),
        (fig(17000, app=0.6, front=0.5), fig(20000), False, "generator (floor)"),  # near ceiling
        (fig(17000, app=0.99, front=0.5), fig(20000), False, "server+generator (floor)"),
        (fig(3000, app=0.6, front=0.2), fig(20000), False, "neither: server partly idle"),
        (fig(3000, app=0.99, void="2 non-2xx"), fig(20000), False, "void"),
        (fig(17000, app=0.99, front=0.1), fig(20000, void="x"), False, "server"),  # void ceiling
    ],
)
def test_limit(figure, ceiling, behind: bool, expected: str) -> None:
    assert bench.limit(figure, ceiling, one_cpu=False, behind_nginx=behind) == expected


def test_limit_on_one_cpu_relies_on_the_ceiling_only() -> None:
    assert bench.limit(fig(100, app=1.0), fig(20000), True, False) == "shared CPU"
    assert bench.limit(fig(19000, app=1.0), fig(20000), True, False) == "generator (floor)"


SERVERS, CEILINGS = bench.configurations(9200)


def all_samples(captcha_void: bool = False) -> dict:
    rates = {
        "nginx+uWSGI": 8000,
        "nginx+gunicorn": 3600,
        "uWSGI alone": 8800,
        "gunicorn alone": 4000,
    }
    out = {("ceiling", c.name): samples(40000, app_busy=0.7, front_busy=1.0) for c in CEILINGS}
    for name, rate in rates.items():
        out[("light", name)] = samples(
            rate, rate * 1.02, rate * 0.98, app_busy=0.99, front_busy=0.4
        )
        out[("captcha", name)] = samples(rate / 32, app_busy=0.99, front_busy=0.05)
    if captcha_void:
        out[("captcha", "nginx+gunicorn")] = samples(5000, non_2xx=5000, app_busy=0.1)
    return out


def test_summarize_ratios_and_table() -> None:
    results = bench.summarize(all_samples(), SERVERS, CEILINGS, one_cpu=False)
    assert set(results) == {"ceiling", "light", "captcha"}
    light = results["light"]
    assert bench.ratio(light, "nginx+gunicorn", "nginx+uWSGI") == pytest.approx(0.45)
    assert bench.ratio(light, "uWSGI alone", "nginx+uWSGI") == pytest.approx(1.1)
    assert all(f.limit == "server" for f in light.values())
    assert results["ceiling"]["generator ceiling"].limit == "wrk"
    assert results["ceiling"]["front ceiling"].limit == "front CPU"
    table = bench.render(results, SERVERS, "heading")
    assert "gunicorn / uWSGI, behind nginx" in table
    row = next(
        line for line in table.splitlines() if line.split()[:2] == ["light", "nginx+gunicorn"]
    )
    assert row.split()[2:4] == ["3,600", "0.45"]
    assert "the generator was not the bottleneck of any figure" in table
    assert table.splitlines()[-1] == "  void figures: none"
    data = bench.report_data(results, {"rounds": 3})
    assert data["ratios"]["gunicorn / uWSGI, alone"]["light"] == pytest.approx(4000 / 8800)
    assert data["figures"]["captcha"]["uWSGI alone"]["rate"] == pytest.approx(275)


def test_a_void_figure_voids_its_ratios() -> None:
    results = bench.summarize(all_samples(captcha_void=True), SERVERS, CEILINGS, one_cpu=False)
    captcha = results["captcha"]
    assert captcha["nginx+gunicorn"].limit == "void"
    assert bench.ratio(captcha, "nginx+gunicorn", "nginx+uWSGI") is None
    assert bench.ratio(captcha, "uWSGI alone", "nginx+uWSGI") is not None
    table = bench.render(results, SERVERS, "heading")
    ratio_row = next(line for line in table.splitlines() if "behind nginx" in line)
    assert ratio_row.split()[-2:] == ["0.45", "void"]
    assert table.splitlines()[-1] == "  void figures: captcha/nginx+gunicorn"


def test_floors_are_reported() -> None:
    data = all_samples()
    data[("light", "nginx+uWSGI")] = samples(8000, app_busy=0.6, front_busy=0.97)
    table = bench.render(bench.summarize(data, SERVERS, CEILINGS, False), SERVERS, "h")
    assert "was the bottleneck: light/nginx+uWSGI" in table


def test_configurations_use_distinct_ports_and_the_right_ceiling() -> None:
    ports = [c.port for c in SERVERS]
    assert len(set(ports)) == 4
    by_name = {c.name: c for c in SERVERS}
    assert by_name["nginx+uWSGI"].ceiling_name == "front ceiling"
    assert by_name["gunicorn alone"].ceiling_name == "generator ceiling"
    assert CEILINGS[0].nginx_cpu == bench.APP_CPU and CEILINGS[1].nginx_cpu == bench.FRONT_CPU


def test_nginx_blocks_mirror_the_deployed_site() -> None:
    conf = bench.nginx_conf("10.231.0.2", SERVERS, 9290)
    assert conf.count("server {") == 3  # two instances behind nginx and the ceiling
    assert "listen 10.231.0.2:9211;" in conf and "listen 10.231.0.2:9212;" in conf
    assert f"uwsgi_pass unix:{bench.WORK}/nginx-uwsgi/app.sock;" in conf
    assert "include uwsgi_params;" in conf
    assert f"proxy_pass http://unix:{bench.WORK}/nginx-gunicorn/app.sock;" in conf
    assert 'proxy_set_header Connection "";' in conf
    assert 'return 200 "ok\\n";' in conf
    assert "9201" not in conf and "9202" not in conf  # the servers alone are not behind nginx
    assert conf.count("{") == conf.count("}")


def test_instances_are_pinned_single_worker_servers_from_the_deployed_venv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []

    def on_vm(command: str, stdin: str = "") -> str:
        sent.append(command)
        return ""

    # uWSGI instances start through benchlib.start_uwsgi, gunicorn ones from bench itself.
    monkeypatch.setattr(sys.modules["benchlib"], "on_vm", on_vm)
    monkeypatch.setattr(bench, "on_vm", on_vm)
    for config in SERVERS:
        bench.start(config, "10.231.0.2")
    commands = dict(zip([c.name for c in SERVERS], sent, strict=True))
    for name, command in commands.items():
        assert command.startswith("/srv/sample_app/bin/run-with-env env WSGIPROBE_PROFILER=0 ")
        assert f" taskset -c {bench.APP_CPU} {bench.VENV}/bin/" in command
        assert "wsgiprobe.entrypoint:application" in command
        config = next(c for c in SERVERS if c.name == name)
        assert f"WSGIPROBE_LAZYINIT_DIR={bench.WORK}/{config.slug}/lazyinit " in command
        assert f" {bench.pidfile(config)} " in command  # the pidfile the cleanup stops
    assert "--processes 1" in commands["uWSGI alone"]
    assert "--http11-socket 10.231.0.2:9201" in commands["uWSGI alone"]
    assert f"--socket {bench.WORK}/nginx-uwsgi/app.sock" in commands["nginx+uWSGI"]
    assert "--workers 1 --worker-class sync" in commands["gunicorn alone"]
    assert "--bind 10.231.0.2:9202" in commands["gunicorn alone"]
    assert f"--bind unix:{bench.WORK}/nginx-gunicorn/app.sock" in commands["nginx+gunicorn"]
    assert "--daemon" in commands["gunicorn alone"]
    assert len({bench.pidfile(c) for c in SERVERS}) == 4
    assert f"for pidfile in {bench.WORK}/*.pid" in bench.CLEANUP
    with pytest.raises(ValueError):
        bench.start(CEILINGS[0], "10.231.0.2")


@pytest.mark.parametrize("server", ["uwsgi", "gunicorn"])
def test_missing_servers_install_at_the_deploys_pin(server: str) -> None:
    assert re.fullmatch(r"\d+(\.\d+)+", bench.role_version(server))


def test_rotation_changes_who_goes_first() -> None:
    firsts = {bench.rotated(SERVERS, turn)[0].name for turn in range(4)}
    assert len(firsts) == 4
    assert sorted(c.name for c in bench.rotated(SERVERS, 7)) == sorted(c.name for c in SERVERS)


def test_cleanup_removes_the_extra_site_and_every_instance() -> None:
    assert f"rm -f {bench.NGINX_CONF}" in bench.CLEANUP
    assert "systemctl reload nginx" in bench.CLEANUP
    assert f"rm -rf {bench.WORK}" in bench.CLEANUP
    assert bench.NGINX_CONF.startswith("/etc/nginx/conf.d/") and bench.NGINX_CONF.endswith(".conf")


def test_process_ticks_sum_user_and_system_time_of_every_process() -> None:
    # pid (comm) state ppid ... utime stime cutime cstime ...: a comm with spaces and a ')'.
    master = "812 (uwsgi (x) y) S 1 812 812 0 -1 4194560 900 0 0 0 7 3 40 2 20 0 1 0 9"
    worker = "813 (uwsgi) R 812 812 812 0 -1 4194624 5000 0 0 0 300 45 0 0 20 0 2 0 9"
    assert bench.process_ticks(f"{master}\n{worker}\n\n") == (7 + 3 + 40 + 2) + (300 + 45)


def test_per_core_counts_the_servers_own_cpu_time_on_a_shared_cpu() -> None:
    # The app CPU was full, but the server had half of it: another process took the rest.
    fig = bench.figure(
        [Sample(100, app_busy=1.0, server_cpu=0.5), Sample(120, app_busy=1.0, server_cpu=0.5)]
    )
    assert fig.server_cpu == pytest.approx(0.5)
    assert fig.per_core == pytest.approx(220)  # median of 200 and 240 per CPU second
    assert bench.others_on_app_cpu(fig) == pytest.approx(0.5)
    assert bench.figure(samples(100, app_busy=1.0, server_cpu=0.05)).per_core is None


def test_the_table_names_figures_taken_while_others_used_the_app_cpu() -> None:
    data = all_samples()
    data[("captcha", "uWSGI alone")] = samples(150, app_busy=1.0, server_cpu=0.6)
    results = bench.summarize(data, SERVERS, CEILINGS, one_cpu=False)
    table = bench.render(results, SERVERS, "h")
    row = next(
        line for line in table.splitlines() if line.split()[:3] == ["captcha", "uWSGI", "alone"]
    )
    assert row.split()[5:7] == ["250", "60%"]  # per core, the server's share
    noted = table.split("server's own CPU time only):")[1].splitlines()[0]
    assert noted == " captcha/uWSGI alone 40%"  # the only figure with others on its CPU


def test_long_listings_wrap_between_items() -> None:
    items = [f"captcha/nginx+gunicorn {n}%" for n in range(10)]
    lines = bench._listing("  the prefix:", items, width=60)
    assert len(lines) > 1 and all(len(line) <= 60 for line in lines)
    assert all(line.startswith("    captcha/") for line in lines[1:])
    assert " ".join(" ".join(lines).split()) == "the prefix: " + ", ".join(items)
    assert bench._listing("  void figures:", ["none"]) == ["  void figures: none"]


def test_benchlib_run_wrk_keeps_its_interface(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    benchlib = sys.modules["benchlib"]  # the module bench imported (bench_captcha, ... use it)
    ran: list[list[str]] = []

    def run(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        ran.append(command)
        return subprocess.CompletedProcess(command, 0, WRK_BAD, "")

    monkeypatch.setattr(benchlib.subprocess, "run", run)
    assert benchlib.run_wrk("http://10.231.0.2/x", 1, 4, {"X-A": "b"}) == (4109.24, 4110)
    wrk = ["wrk", "-t1", "-c4", "-d1s", "-H", "X-A: b", "http://10.231.0.2/x"]
    assert ran == [["taskset", "-c", str(bench.FRONT_CPU), *wrk]]
    assert (
        "  wrk: Socket errors: connect 2, read 317, write 0, timeout 3" in capsys.readouterr().out
    )
