"""Server-Sent Events: format, bounded duration, and streams released when closed."""

import json
import socket
import threading
import time

import pytest
from werkzeug.serving import make_server

from sample_app import events


def parse(text):
    """[(field, value) lists] of the SSE blocks in ``text``."""
    blocks = []
    for block in text.split("\n\n"):
        if block:
            blocks.append([tuple(line.split(": ", 1)) for line in block.split("\n")])
    return blocks


def read_until(response, marker, timeout=2.0):
    chunks = ""
    deadline = time.monotonic() + timeout
    for chunk in response.response:
        chunks += chunk.decode() if isinstance(chunk, bytes) else chunk
        if marker in chunks or time.monotonic() > deadline:
            break
    return chunks


def wait_for_no_open_streams(timeout=3.0):
    deadline = time.monotonic() + timeout
    while events.open_streams() and time.monotonic() < deadline:
        time.sleep(0.01)
    return events.open_streams()


def test_first_event_arrives_at_once(client):
    start = time.monotonic()
    response = client.get("/events", buffered=False)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    text = read_until(response, "event: stats")
    assert time.monotonic() - start < 0.5
    assert text.startswith("retry: 2000\n\n")
    blocks = parse(text)
    assert blocks[1][0] == ("event", "stats")
    assert json.loads(blocks[1][1][1]) == {"issued": 0, "verified": 0, "rejected": 0}
    assert events.open_streams() == 1
    response.close()
    assert events.open_streams() == 0


def test_events_are_well_formed_and_the_stream_ends_at_max_seconds(make_app):
    client = make_app(EVENTS_INTERVAL=0.1).test_client()
    client.post("/api/captchas")
    start = time.monotonic()
    response = client.get("/events?max_seconds=0.45", buffered=False)
    text = response.get_data(as_text=True)  # returns when the stream ends
    elapsed = time.monotonic() - start
    response.close()
    assert 0.45 <= elapsed < 1.0
    assert text.endswith("\n\n")
    blocks = parse(text)
    assert blocks[0] == [("retry", "2000")]
    stats = blocks[1:]
    assert 5 <= len(stats) <= 6
    for block in stats:
        assert block[0] == ("event", "stats") and block[1][0] == "data"
        assert json.loads(block[1][1]) == {"issued": 1, "verified": 0, "rejected": 0}
    assert events.open_streams() == 0


def test_max_seconds_cannot_lengthen_the_stream(make_app):
    client = make_app(EVENTS_INTERVAL=0.1, EVENTS_MAX_SECONDS=0.3).test_client()
    start = time.monotonic()
    response = client.get("/events?max_seconds=100", buffered=False)
    response.get_data()
    response.close()
    assert time.monotonic() - start < 0.8


@pytest.mark.parametrize(
    "query",
    ["null", "nan", "inf", "-inf", "Infinity", "-1", "-0.5", "abc", "", "1_0", " 1", "0x1", "1,5"],
)
def test_a_bad_max_seconds_is_a_json_400_and_opens_no_stream(client, query):
    response = client.get("/events", query_string={"max_seconds": query})
    assert response.status_code == 400
    assert response.get_json() == {
        "error": "invalid_parameter",
        "message": "max_seconds must be a number >= 0, given once.",
    }
    assert events.open_streams() == 0


def test_max_seconds_given_twice_is_a_400(client):
    response = client.get("/events?max_seconds=0&max_seconds=0")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_parameter"


@pytest.mark.parametrize("value", ["0", "-0", "0.05", "5e-2", "1E+2", "1e999"])
def test_any_number_at_least_0_is_accepted(make_app, value):
    # Values beyond EVENTS_MAX_SECONDS (1e999 overflows to infinity) are cut to it.
    client = make_app(EVENTS_INTERVAL=0.05, EVENTS_MAX_SECONDS=0.05).test_client()
    response = client.get("/events", query_string={"max_seconds": value}, buffered=False)
    assert response.status_code == 200
    assert "event: stats" in response.get_data(as_text=True)
    response.close()


def test_stream_is_released_when_the_client_goes_away(make_app):
    app = make_app(EVENTS_INTERVAL=0.05, EVENTS_MAX_SECONDS=30)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as conn:
            conn.sendall(b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n")
            received = b""
            while b"event: stats" not in received:
                received += conn.recv(4096)
            assert events.open_streams() == 1
        # The server sees the disconnect at its next write, a few intervals later.
        assert wait_for_no_open_streams() == 0
    finally:
        server.shutdown()
        thread.join()
