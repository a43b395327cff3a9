"""bench_tls.py's pure part: openssl s_time's count, the ticks, per core, the rounds' order,
the ratios within rounds and their median and spread, voids."""

from __future__ import annotations

import pytest

from loadtests_import import load

bench_tls = load("bench/bench_tls")


def _run(side: str, requests: int, app: float, nginx: float, **kw: object) -> object:
    return bench_tls.Run(side, requests, 5.0, app, nginx, **kw)


def test_s_time_output() -> None:
    out = (
        "Collecting connection statistics for 5 seconds\n"
        "tttttttttt\n\n"
        "1630 connections in 3.52s; 463.07 connections/user sec, bytes read 0\n"
        "1630 connections in 6 real seconds, 0 bytes read per connection\n"
    )
    assert bench_tls.parse_s_time(out) == 1630
    with pytest.raises(ValueError):
        bench_tls.parse_s_time("ERROR\n")


def test_ticks_of_the_app_server_then_nginx() -> None:
    line = "12 (uwsgi) S 1 1 1 0 -1 4194560 0 0 0 0 {u} {s} 0 0 20 0 1 0"
    out = "\n".join([line.format(u=100, s=50), line.format(u=10, s=5), "--", line.format(u=7, s=3)])
    assert bench_tls.split_ticks(out) == (165, 10)


def test_per_core_counts_nginx_and_the_app_server() -> None:
    run = _run("https", 1000, 3.0, 1.0)
    assert run.rate == 200 and run.per_core == 250 and run.nginx_per_core == 1000
    assert _run("https", 1000, 0, 0).per_core is None


def test_rounds_alternate_which_side_goes_first() -> None:
    assert [bench_tls.order(n)[0] for n in (1, 2, 3, 4)] == ["http", "https", "http", "https"]


def test_ratios_are_taken_within_each_round_then_their_median() -> None:
    rounds = [
        {
            "http": _run("http", 1000, 4.0, 1.0),  # 200 per core
            "https": _run("https", 950, 4.0, 1.0 + extra),
            "handshake": _run("handshake", 2000, 0.0, 2.0),
        }
        for extra in (0.0, 0.25, 0.5)
    ]
    summary = bench_tls.summarize(rounds)
    # 950/5 = 190, 950/5.25, 950/5.5 against 200
    assert summary.ratio_per_core.median == pytest.approx(950 / 5.25 / 200)
    assert summary.ratio_per_core.low == pytest.approx(950 / 5.5 / 200)
    assert summary.ratio_per_core.high == pytest.approx(0.95)
    assert summary.ratio_rate.median == pytest.approx(0.95)
    assert summary.handshakes.median == 400 and summary.handshakes_per_nginx_core.median == 1000
    assert summary.nginx_us["http"].median == pytest.approx(1000)
    assert summary.met and not summary.void
    table = bench_tls.render(summary, "heading")
    assert "https / http, per core   0.90 (0.86..0.95)   goal >= 0.9: met" in table
    assert "void: none" in table


def test_errors_void_a_round_and_the_verdict() -> None:
    good = {
        "http": _run("http", 1000, 4.0, 1.0),
        "https": _run("https", 1000, 4.0, 1.0),
        "handshake": _run("handshake", 100, 0.0, 1.0),
    }
    bad = {**good, "https": _run("https", 1000, 4.0, 1.0, non_2xx=3)}
    summary = bench_tls.summarize([good, bad])
    assert summary.void == ["round 2 https: 3 non-2xx"]
    assert summary.ratio_per_core.median == 1.0  # from the good round alone
    assert not summary.met
    failed = {**good, "handshake": _run("handshake", 0, 0.0, 0.0)}
    assert bench_tls.summarize([failed]).void == ["round 1 handshake: no request answered"]
