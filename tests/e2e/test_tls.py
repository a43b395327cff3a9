"""HTTPS on the single VM (tls_mode local-ca, configs/local), under each app server: served as
Mozilla's intermediate guideline 6.0 says (sslyze), X25519MLKEM768 where the VM's OpenSSL has
it, HTTP/2; port 80 redirects everything but the ACME challenge; HSTS on 443 only, with the
hardening headers; the app sees https; the key is root's alone.

Every request of the suite verifies the served chain against the config's CA alone (stack.py);
the second deploy's same serial is test_deploy's (it already deploys twice)."""

from __future__ import annotations

import http.client
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import yaml

from stack import LOG_DIR, ROOT, TLS_PORT, HttpResponse, Stack

MOZILLA_INTERMEDIATE = Path(__file__).with_name("mozilla-intermediate-6.0.json")
SSLYZE = Path(sys.executable).with_name("sslyze")
HSTS = "max-age=63072000"  # tls_hsts_max_age's default; no preload
NGINX_DEFAULTS = yaml.safe_load((ROOT / "roles/nginx/defaults/main.yml").read_text())
SECURITY_HEADERS: dict[str, str] = NGINX_DEFAULTS["nginx_security_headers"]
TLS_VARS = yaml.safe_load((ROOT / "roles/tls/vars/main.yml").read_text())
# Where nginx answers /.well-known/acme-challenge/ from (the tls role's), for the sample app.
ACME_WEBROOT = TLS_VARS["tls_acme_webroot"].replace("{{ app_name }}", "sample_app")
assert "{{" not in ACME_WEBROOT, ACME_WEBROOT
# The hybrid post-quantum group of Mozilla's 6.0 profile: OpenSSL 3.5 and later (Debian 13).
PQ_GROUP = "X25519MLKEM768"
# One path of each kind nginx serves on 443: the app's page, a static file, the app's JSON
# error, nginx's own error, the health check (and a stream, below). Each carries every header:
# an add_header in a location would drop the server's.
PATHS = ("/", "/static/style.css", "/api/captchas/nope/image.png", "/static/nope.css", "/healthz")


def plain_http(stack: Stack, path: str) -> HttpResponse:
    """GET on port 80 from this host, redirects not followed."""
    connection = http.client.HTTPConnection(stack.address, 80, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return HttpResponse(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def openssl_version(stack: Stack) -> tuple[int, int]:
    """The VM's OpenSSL (the one nginx is linked with on Debian): (major, minor)."""
    out = stack.ssh("openssl version").stdout  # "OpenSSL 3.5.1 1 Jul 2025 (Library: ...)"
    match = re.match(r"OpenSSL (\d+)\.(\d+)", out)
    assert match, out
    return int(match.group(1)), int(match.group(2))


def handshake_on_vm(stack: Stack, groups: str) -> str:
    """openssl s_client from the VM to its own public address, offering only those groups:
    what it printed."""
    command = (
        f"openssl s_client -connect {stack.address}:{TLS_PORT} -servername {stack.address}"
        f" -tls1_3 -groups {groups} </dev/null 2>&1"
    )
    return stack.ssh(f"timeout 20 sh -c {shlex.quote(command)}", check=False).stdout


def test_sslyze_finds_mozilla_s_intermediate_6_0_profile(deployed: Stack):
    """sslyze exits 1 when the server does not comply; it validates the chain against the
    config's CA (as well as its own stores, in which the CA is not)."""
    report = LOG_DIR / f"sslyze-{deployed.server}.json"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            str(SSLYZE), "--custom_tls_config", str(MOZILLA_INTERMEDIATE),
            "--certinfo_ca_file", str(deployed.ca_file), f"--json_out={report}",
            f"{deployed.address}:{TLS_PORT}",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert f"{deployed.address}:{TLS_PORT}: OK - Compliant." in proc.stdout, proc.stdout[-6000:]
    # The chain verified against the config's CA (not one of sslyze's stores).
    trusted = re.search(r"Supplied CA file CA Store .*OK - Certificate is trusted", proc.stdout)
    assert trusted, proc.stdout[-6000:]


def test_the_post_quantum_group_is_offered_where_openssl_has_it(deployed: Stack):
    """Mozilla 6.0 puts X25519MLKEM768 first. sslyze's own OpenSSL cannot offer it, so the
    VM's openssl asks: on Debian 13 (OpenSSL 3.5) nginx must agree to it; on Debian 12
    (OpenSSL 3.0, which has no such group) nginx must not name it, and X25519 is chosen."""
    version = openssl_version(deployed)
    if deployed.release() == "trixie":
        assert version >= (3, 5), version
    if version >= (3, 5):
        shown = handshake_on_vm(deployed, PQ_GROUP)
        assert f"Negotiated TLS1.3 group: {PQ_GROUP}" in shown, shown
    else:
        configured = deployed.ssh("nginx -T 2>/dev/null").stdout
        assert PQ_GROUP not in configured
        shown = handshake_on_vm(deployed, "X25519")
        assert re.search(r"(Server|Peer) Temp Key: X25519,", shown), shown


def test_http2_is_offered(deployed: Stack):
    with deployed.tls_socket(alpn=["h2", "http/1.1"]) as connection:
        assert connection.selected_alpn_protocol() == "h2"
        assert connection.version() in ("TLSv1.2", "TLSv1.3")


def test_port_80_redirects_everything_to_https(deployed: Stack):
    for path in ("/", "/api/captchas?x=1", "/static/style.css"):
        response = plain_http(deployed, path)
        assert response.status == 301, (path, response.status)
        assert response.headers.get("Location") == f"https://{deployed.address}{path}", path
        assert "Strict-Transport-Security" not in response.headers, path


def test_port_80_serves_the_acme_challenge_without_redirect(deployed: Stack):
    token = uuid.uuid4().hex
    folder = f"{ACME_WEBROOT}/.well-known/acme-challenge"
    deployed.ssh(f"mkdir -p {folder} && printf %s {token}.key > {folder}/{token}")
    try:
        response = plain_http(deployed, f"/.well-known/acme-challenge/{token}")
        assert (response.status, response.text) == (200, f"{token}.key"), response
        assert "Location" not in response.headers
        assert "Strict-Transport-Security" not in response.headers
        # Anything else under it is nginx's 404, not the app's nor a redirect.
        missing = plain_http(deployed, f"/.well-known/acme-challenge/{token}x")
        assert missing.status == 404
    finally:
        deployed.ssh(f"rm -f {folder}/{token}")


def stream_headers(stack: Stack) -> dict[str, str]:
    """The headers of an /events stream (a location of its own, to the stream pool)."""
    connection = stack.https_connection()
    try:
        connection.request("GET", "/events?max_seconds=1")
        response = connection.getresponse()
        assert response.status == 200, response.status
        response.read()
        return dict(response.getheaders())
    finally:
        connection.close()


def test_every_answer_on_443_carries_hsts_and_the_hardening_headers(deployed: Stack):
    answers = {path: deployed.get(path).headers for path in PATHS}
    answers["/events"] = stream_headers(deployed)
    for path, headers in answers.items():
        assert headers.get("Strict-Transport-Security") == HSTS, (path, headers)
        for name, value in SECURITY_HEADERS.items():
            if name == "Content-Security-Policy":
                continue  # the app may send its own (the profiler's pages): test_nginx_front
            assert headers.get(name) == value, (path, name, headers)


def test_the_app_sees_https(deployed: Stack):
    """nginx tells the app server the scheme (uWSGI: HTTPS; gunicorn: X-Forwarded-Proto, from
    nginx alone): the absolute URL the app builds (/debug/slow answers it) is https over TLS,
    http on the VM's plain loopback port, whatever X-Forwarded-Proto a client sends there.
    (The sample app sets no cookie: the toolkit's Secure-cookie middleware, which keys on
    the same scheme, has unit tests.)"""
    path = "/debug/slow?seconds=0"
    assert deployed.get(path).json()["url"] == f"https://{deployed.address}{path}"
    assert deployed.loopback("GET", path).json()["url"] == f"http://127.0.0.1{path}"
    forged = deployed.loopback("GET", path, {"X-Forwarded-Proto": "https"})
    assert forged.json()["url"] == f"http://127.0.0.1{path}"


def test_the_private_key_is_root_s_alone(deployed: Stack):
    configured = deployed.ssh("nginx -T 2>/dev/null").stdout
    keys = set(re.findall(r"^\s*ssl_certificate_key\s+(\S+);", configured, re.M))
    assert len(keys) == 1, keys
    (key,) = keys
    assert deployed.ssh(f"stat -c '%a %U %G' {key}").stdout.split() == ["600", "root", "root"]
    # And no copy of it readable by others under /etc/ssl or the role's folders.
    loose = deployed.ssh(
        "find /etc/ssl /etc/nginx -type f -name '*.key' -perm /077 2>/dev/null || true"
    ).stdout.split()
    assert loose == [], loose
