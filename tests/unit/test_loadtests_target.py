"""loadtests/target.py: the one place that knows the target's https URL and the CA to trust;
the locust users verify against it (a real TLS server on loopback, with a CA made here)."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from loadtests_import import ROOT, load

target = load("target")


# Where the CA is


def test_the_ca_path_is_the_tls_roles(tmp_path: Path) -> None:
    # The tls role keeps the CA under the inventory's folder; target.py mirrors that path.
    defaults = yaml.safe_load((ROOT / "roles/tls/defaults/main.yml").read_text())
    folder = defaults["tls_ca_dir"].replace("{{ inventory_dir }}", "/configs/lab")
    assert folder == f"/configs/lab/{target.CA_IN_CONFIG.parent}", "update target.py"
    tasks = (ROOT / "roles/tls/tasks/local_ca.yml").read_text()
    assert f"{{{{ tls_ca_dir }}}}/{target.CA_IN_CONFIG.name}" in tasks
    assert target.ca_file("lab", tmp_path) == tmp_path / "lab/.secrets/tls-ca/ca.crt"
    assert target.ca_file().is_absolute()


def test_no_ca_yet_says_deploy_first(tmp_path: Path) -> None:
    (tmp_path / "local").mkdir()
    with pytest.raises(target.TargetError, match=r"deploy first \(make deploy ENV=local"):
        target.require_ca("local", tmp_path)
    with pytest.raises(target.TargetError, match="no configs/nope"):
        target.require_ca("nope", tmp_path)
    for bad in ("", "../x", ".."):
        with pytest.raises(target.TargetError):
            target.ca_file(bad, tmp_path)


def test_make_tls_ca_prints_the_absolute_path_or_fails_clearly(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, str(ROOT / "loadtests/target.py"), "ca", "--env", "no-such-config"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert ok.returncode == 1 and ok.stdout == ""
    assert "ca: no configs/no-such-config" in ok.stderr


@pytest.mark.parametrize(
    ("address", "port", "scheme", "url"),
    [
        ("10.231.0.2", 443, "https", "https://10.231.0.2"),
        ("10.231.0.2", 8443, "https", "https://10.231.0.2:8443"),
        ("fd00::2", 443, "https", "https://[fd00::2]"),
        ("app.example", 80, "http", "http://app.example"),
        ("10.231.0.2", 443, "http", "http://10.231.0.2:443"),
    ],
)
def test_urls(address: str, port: int, scheme: str, url: str) -> None:
    assert target.url_for(address, port, scheme) == url


def test_a_given_host_trusts_the_given_ca_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(target.CA_ENV, raising=False)
    mine, theirs = tmp_path / "mine.crt", tmp_path / "theirs.crt"
    mine.write_text("x")
    theirs.write_text("x")
    assert target.given_target("https://x.example/", None) == target.Target(
        "https://x.example", None, "--host"
    )
    assert target.given_target("https://x.example", str(mine)).ca_file == mine
    monkeypatch.setenv(target.CA_ENV, str(theirs))
    assert target.given_target("https://x.example", str(mine)).ca_file == theirs
    monkeypatch.setenv(target.CA_ENV, str(tmp_path / "missing.crt"))
    with pytest.raises(target.TargetError, match="no CA file"):
        target.given_target("https://x.example", None)
    with pytest.raises(target.TargetError, match="not a base URL"):
        target.given_target("x.example", None)


# A real TLS server on loopback, its certificate signed by a CA of the test


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test CA"))
        .issuer_name(name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = directory / "ca.crt", directory / "host.crt", directory / "host.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """https://127.0.0.1:PORT and the CA that signed its certificate."""
    ca, cert, key = _certificates(tmp_path_factory.mktemp("tls"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", ca
    finally:
        server.shutdown()
        server.server_close()


def test_the_certificate_verifies_against_the_ca_only(tls_server: tuple[str, Path]) -> None:
    url, ca = tls_server
    said = target.check_certificate(url, ca)
    assert said.startswith("127.0.0.1 (names 127.0.0.1), issued by test CA"), said
    # Not in the system's store: refused, with the reason.
    with pytest.raises(target.TargetError, match="does not verify against the system store"):
        target.check_certificate(url, None)
    # The right CA, the wrong name: refused too.
    with pytest.raises(target.TargetError, match="does not verify"):
        target.check_certificate(url.replace("127.0.0.1", "localhost"), ca)
    assert target.check_certificate("http://127.0.0.1:1", None) == "plain http: no certificate"


LOCUST_CLIENT = """
import sys
sys.path.insert(0, {locustfiles!r})
from captchaload import CaptchaUser, verifying_context_factory
from locust.contrib.fasthttp import FastHttpSession
from locust.event import EventHook
assert CaptchaUser.insecure is False
session = FastHttpSession({url!r}, EventHook(), None, insecure=CaptchaUser.insecure,
                          ssl_context_factory=verifying_context_factory({ca!r}))
response = session.get("/healthz")
error = getattr(response, "error", None)
print(response.status_code, type(error).__name__ if error else "")
"""


@pytest.mark.parametrize(
    ("trust", "expected"), [("ca", "200 "), ("", "0 SSLCertVerificationError")]
)
def test_the_locust_users_verify_against_the_given_ca(
    tls_server: tuple[str, Path], trust: str, expected: str
) -> None:
    # In a process of its own: importing locust monkey-patches the standard library.
    url, ca = tls_server
    code = LOCUST_CLIENT.format(
        locustfiles=str(ROOT / "loadtests/locustfiles"), url=url, ca=str(ca) if trust else ""
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == expected.strip(), proc.stdout
