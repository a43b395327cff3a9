"""What nginx shows a client, under each app server: no version, the security headers, its own
errors as JSON on the API paths; headers nginx lets through reach the app, larger ones get
nginx's 4xx (never the app server's 502 or 431); one client cannot hold more connections than
nginx_client_connections, nor keep one with a slow body."""

from __future__ import annotations

import select
import ssl
import time

from stack import HEADER_LINE, HEADER_LINES, Stack, long_headers, many_headers

# The roles' defaults (roles/nginx/defaults/main.yml).
CLIENT_CONNECTIONS = 100
CLIENT_TIMEOUT = 10
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}


def filler(size: int) -> str:
    return "a" * size


def test_nginx_names_no_version_and_sends_the_security_headers(deployed: Stack):
    page = deployed.get("/")
    assert page.status == 200
    assert page.headers["Server"] == "nginx", page.headers
    for name, value in SECURITY_HEADERS.items():
        assert page.headers.get(name) == value, (name, page.headers)
    policy = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy, policy
    # nginx's own error page too: no version in it.
    error = deployed.request("GET", "/static/no-such-file.css")
    assert error.status == 404
    assert b"nginx/" not in error.body, error.text
    assert error.headers.get("X-Content-Type-Options") == "nosniff"


def test_nginx_errors_are_json_on_api_paths_and_pages_for_browsers(deployed: Stack):
    too_large = long_headers(HEADER_LINES + 1)
    # An API path: JSON whatever the client accepts.
    api = deployed.request("GET", "/api/captchas", headers=too_large)
    assert api.status == 400, api.text
    assert api.headers["Content-Type"] == "application/json", api.headers
    assert api.json()["error"] == "headers_too_large"
    # Elsewhere, a browser gets nginx's page (headers too large: nginx read no Accept).
    page = deployed.request("GET", "/", headers=too_large)
    assert page.status == 400
    assert page.headers["Content-Type"].startswith("text/html"), page.headers
    # A client that asks for JSON gets JSON, on any path.
    static = "/static/style.css"
    assert deployed.request("DELETE", static).headers["Content-Type"].startswith("text/html")
    asked = deployed.request("DELETE", static, headers={"Accept": "application/json"})
    assert asked.status == 405
    assert asked.json()["error"] == "method_not_allowed"


def test_headers_nginx_lets_through_reach_the_app(deployed: Stack):
    """uWSGI dropped a block over ~33 KB or 120 headers (nginx: 502), gunicorn answered 431:
    now each takes whatever nginx passes, and nginx alone refuses more, with a 4xx."""
    upstream_errors = nginx_upstream_errors(deployed)
    assert deployed.request("GET", "/healthz", headers=many_headers()).status == 200
    lines = long_headers(HEADER_LINES - 1)
    assert deployed.request("GET", "/healthz", headers=lines).status == 200
    # Beyond: nginx's own 400, and the app server never saw it.
    over = long_headers(HEADER_LINES + 1)
    assert deployed.request("GET", "/healthz", headers=over).status == 400
    line = {"X-Line": filler(HEADER_LINE + 100)}
    assert deployed.request("GET", "/healthz", headers=line).status == 400
    uri = deployed.request("GET", "/healthz?q=" + filler(HEADER_LINE + 100))
    assert uri.status == 414
    assert nginx_upstream_errors(deployed) == upstream_errors


def nginx_upstream_errors(deployed: Stack) -> int:
    """Lines of nginx's error log about an app server (a dropped request: 502)."""
    count = "awk '/upstream/ {n++} END {print n+0}' /var/log/nginx/error.log"
    return int(deployed.ssh(count).stdout)


def slow_post(stack: Stack, path: str = "/api/captchas") -> ssl.SSLSocket:
    """A POST whose headers are all sent, and its body never: nginx holds it while it waits."""
    connection = stack.tls_socket()
    connection.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {stack.address}\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n{".encode()
    )
    return connection


def readable(connection: ssl.SSLSocket) -> bool:
    """Whether nginx answered or closed it. A TLS record alone (TLS 1.3 sends its session
    tickets after the handshake) makes the socket readable but carries no answer."""
    if not select.select([connection], [], [], 0)[0] and not connection.pending():
        return False
    timeout = connection.gettimeout()
    connection.setblocking(False)
    try:
        connection.recv(1)  # an answer's first byte, or b"" at a close: either way, answered
        return True
    except ssl.SSLWantReadError:
        return False
    except OSError:
        return True  # reset
    finally:
        connection.settimeout(timeout)


def test_one_client_cannot_hold_more_connections_than_its_limit(deployed: Stack):
    connections = [slow_post(deployed) for _ in range(CLIENT_CONNECTIONS)]
    try:
        deadline = time.monotonic() + 5
        while True:
            # One nginx refused at once was not held: an earlier connection of this client (the
            # previous test's) still counted. Hold another in its place.
            for i, connection in enumerate(connections):
                if readable(connection):
                    connection.close()
                    connections[i] = slow_post(deployed)
            # Refused once nginx has read every header block.
            refused = deployed.request("GET", "/api/captchas/nope")
            if refused.status == 429 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert refused.status == 429, refused.text
        assert refused.json()["error"] == "too_many_connections"
    finally:
        for connection in connections:
            connection.close()
    # Let go: served again (nginx counts a connection until it closes it).
    deadline = time.monotonic() + 5
    while deployed.get("/healthz").status != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert deployed.get("/healthz").status == 200


def test_a_slow_body_loses_its_connection(deployed: Stack):
    connection = slow_post(deployed)
    started = time.monotonic()
    with connection:
        # nginx closes it, or resets it (reset_timedout_connection): 408 in its log. (A close
        # without TLS's close_notify is an SSLEOFError.)
        try:
            while connection.recv(4096):
                pass
        except (ConnectionResetError, ssl.SSLEOFError):
            pass
    waited = time.monotonic() - started
    assert CLIENT_TIMEOUT - 1 <= waited <= CLIENT_TIMEOUT + 5, waited
