"""make bench-streams' pure parts: benchlib's p99 and SteadyLoad, bench_streams' summary and
flow, and the stream holder (loadtests/streams.py) against a local fake server. No VM here."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from loadtests_import import load

bench_streams = load("bench/bench_streams")
streams = load("streams")
benchlib = sys.modules["benchlib"]


def test_p99_is_the_nearest_rank() -> None:
    assert benchlib.p99([float(v) for v in range(100, 0, -1)]) == 99.0
    assert benchlib.p99([float(v) for v in range(1, 201)]) == 198.0
    assert benchlib.p99([5.0]) == 5.0
    with pytest.raises(ValueError):
        benchlib.p99([])


def test_phase_p99_in_ms_and_void_with_too_few_samples() -> None:
    assert bench_streams.phase_p99([0.001] * 19) is None
    assert bench_streams.phase_p99([0.001] * 19 + [0.5]) == pytest.approx(500)


def test_steady_load_counts_successes_and_failures_at_its_rate() -> None:
    calls = iter(range(10**6))

    def request() -> bool:
        n = next(calls)
        if n % 3 == 2:
            raise OSError("timed out")
        return n % 3 == 0

    with benchlib.SteadyLoad(request, rate=100, threads=2) as steady:
        time.sleep(0.5)
    sent = len(steady.samples) + steady.failures
    assert 40 <= sent <= 60  # 100/s for 0.5 s
    assert steady.failures == pytest.approx(2 * sent / 3, abs=2)


def test_summarize_ratios_spread_and_verdict() -> None:
    s = bench_streams.summarize([10.0, 20.0, 10.0], [15.0, 20.0, 30.0])
    assert s["ratios"] == [1.5, 1.0, 3.0]
    assert (s["ratio_median"], s["ratio_min"], s["ratio_max"]) == (1.5, 1.0, 3.0)
    assert (s["baseline_p99_ms"], s["streams_p99_ms"]) == (10.0, 20.0)
    assert s["met"]
    assert not bench_streams.summarize([10.0, 10.0, 10.0], [25.0, 19.0, 21.0])["met"]


def test_summarize_a_void_round_voids_the_verdict() -> None:
    s = bench_streams.summarize([10.0, 10.0], [12.0, None])
    assert s["ratio_median"] is None and not s["met"]
    assert s["ratios"] == [1.2]


def test_holder_command_holds_longer_than_it_asks_the_stream_for_not() -> None:
    args = bench_streams.argparse.Namespace(clients=10, per_client=10, stagger=3.0)
    command = bench_streams.holder_command(args, 80)
    assert command.startswith("python3 - --url 'http://127.0.0.1/events?max_seconds=110'")
    assert "--clients 10 --per-client 10 --hold 80 --stagger 3" in command


class FakeApi(BaseHTTPRequestHandler):
    """The captcha API's three steps, checking the oracle header and the answer."""

    seen: ClassVar[list[tuple[str, str, str | None]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(("POST", self.path, self.headers.get("X-Captcha-Oracle")))
        if self.path == "/api/captchas":
            captcha = {"answer": "AB12", "image_url": "/i.png", "verify_url": "/v"}
            self.reply(201, json.dumps(captcha).encode())
        else:
            self.reply(200, json.dumps({"valid": json.loads(body)["answer"] == "AB12"}).encode())

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, None))
        self.reply(200, b"\x89PNG...", "image/png")


def test_flow_creates_fetches_and_verifies_with_the_oracle(monkeypatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    # A plain http target here (the deployed site's is https, its CA's: target.py).
    site = bench_streams.Target(f"http://127.0.0.1:{port}", None, "test")
    try:
        assert bench_streams.flow(site, "s3cret")() is True
    finally:
        server.shutdown()
    assert FakeApi.seen == [
        ("POST", "/api/captchas", "s3cret"),
        ("GET", "/i.png", None),
        ("POST", "/v", "s3cret"),
    ]


def test_holder_arguments() -> None:
    args = streams.parse_args(["--url", "http://127.0.0.1/events?max_seconds=5"])
    assert (args.clients, args.per_client, args.first_source, args.stagger) == (
        10,
        10,
        "127.0.0.2",
        1,
    )
    assert streams.sources("127.0.0.254", 3) == ["127.0.0.254", "127.0.0.255", "127.0.1.0"]
    with pytest.raises(SystemExit):
        streams.parse_args(["--url", "https://127.0.0.1/events"])


def test_holder_parses_a_response_head() -> None:
    head = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nX-A:b:c\r\n\r\n"
    assert streams.parse_head(head) == ("503", {"retry-after": "5", "x-a": "b:c"})


def test_holder_lines() -> None:
    held = [streams.Stream("200", 4), streams.Stream("200", 8, ended=True), streams.Stream("")]
    held.append(streams.Stream("429", retry_after=None, body='{"error":"too_many_streams"}'))
    opened = streams.opened_line(held)
    assert opened["opened"] == {"200": 2, "pending": 1, "429": 1}
    # An HTTP answer rather than a stream without one.
    assert opened["refused"] == {
        "status": "429",
        "retry_after": None,
        "body": '{"error":"too_many_streams"}',
    }
    assert streams.opened_line(held[:3])["refused"]["status"] == "pending"
    assert streams.final_line(held) == {
        "final": {"200": 2, "pending": 1, "429": 1},
        "events_min": 4,
        "events_median": 6,
        "ended_early": 1,
    }


async def fake_events(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The third stream of each client address gets 429; the others two events, then wait."""
    await reader.readuntil(b"\r\n\r\n")
    client = writer.get_extra_info("peername")[0]
    fake_events.count[client] = fake_events.count.get(client, 0) + 1
    if fake_events.count[client] > 2:
        writer.write(b'HTTP/1.1 429 Too Many\r\nRetry-After: 1\r\n\r\n{"error":"x"}')
    else:
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nretry: 2000\n\ndata: {}\n\ndata: {}\n\n")
        await writer.drain()
        await asyncio.sleep(30)
    writer.close()


fake_events.count = {}


def test_holder_opens_counts_and_reports(capsys) -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(fake_events, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        args = streams.parse_args(
            f"--url http://127.0.0.1:{port}/events --clients 2 --per-client 3"
            " --hold 0.3 --stagger 0.1".split()
        )
        async with server:
            await streams.run(args)

    asyncio.run(scenario())
    opened, final = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert fake_events.count == {"127.0.0.2": 3, "127.0.0.3": 3}
    assert opened["opened"] == {"200": 4, "429": 2}
    assert opened["refused"] == {"status": "429", "retry_after": "1", "body": '{"error":"x"}'}
    assert final["final"] == {"200": 4, "429": 2}
    assert (final["events_min"], final["ended_early"]) == (2, 0)
