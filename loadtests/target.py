"""The one place that knows the load tests' target: the deployed stack's https URL and the CA
file to trust.

run.py, loadgen.py, the benchmarks and the Makefile (`make -s tls-ca`, `make demo`) ask this
module; nothing else in loadtests/ builds a target URL or a CA path.

- The CA: with the tls role's `local-ca` mode, each config has one CA, made on the controller at
  its first deploy: configs/ENV/.secrets/tls-ca/ca.crt (`CA_IN_CONFIG`, the tls role's default;
  a unit test holds the two together). ca.crt is public; ca.key beside it never leaves there.
- The local VM: https://ADDRESS (nginx's :443; plain :80 redirects there), its CA the one of
  configs/local.
- Another target (--host URL): the system's trust store, unless a CA file is given
  (--ca-file, or LOADTEST_CA_FILE: a locust worker on another host gets it this way, since the
  master's options, a path on the controller, reach every worker and would replace its own).
- Clients verify, always: Python's ssl with create_default_context (chain and host name; the
  host's certificate names its IP addresses), locust's users alike (captchaload.py). wrk cannot
  (below): check_certificate() verifies once before it runs.

Usage (stdlib only: the Makefile runs it with the system's python3):
    python3 loadtests/target.py ca [--env local]     # the CA file's absolute path, or exit 1
    python3 loadtests/target.py url                   # the local VM's https URL
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
LOCALVM = [sys.executable, str(ROOT / "tools" / "localvm.py")]
# Mirrors the tls role's CA folder (roles/tls/defaults/main.yml: under the inventory's folder),
# and its certificate's name there. test_loadtests_target.py checks that they agree.
CA_IN_CONFIG = Path(".secrets/tls-ca/ca.crt")
# The config of the local VM (make vm; make deploy with ENV=local), and where its deploy keeps
# the secrets it generated (the roles' *_secret files, under the inventory's .secrets/).
VM_ENV = "local"
VM_SECRETS = CONFIGS / VM_ENV / ".secrets/localvm"
# The environment variable that names a CA file; it wins over --ca-file (see above).
CA_ENV = "LOADTEST_CA_FILE"
HTTPS_PORT = 443


class TargetError(Exception):
    """No target, or no CA where one is needed: the message says what to do."""


@dataclass(frozen=True)
class Target:
    url: str  # base URL, no trailing slash
    ca_file: Path | None  # None: the system's trust store (a public certificate)
    what: str  # where it came from, for the run's first line

    @property
    def https(self) -> bool:
        return self.url.startswith("https://")


def ca_file(env: str = VM_ENV, configs: Path = CONFIGS) -> Path:
    """configs/ENV's CA certificate (absolute; it may not exist yet)."""
    if not env or "/" in env or env in (".", ".."):
        raise TargetError(f"not a config's name: {env!r}")
    return (configs / env / CA_IN_CONFIG).resolve()


def require_ca(env: str = VM_ENV, configs: Path = CONFIGS) -> Path:
    """configs/ENV's CA certificate, which must exist."""
    if not (configs / env).is_dir():
        raise TargetError(f"no configs/{env}")
    path = ca_file(env, configs)
    if not path.is_file():
        raise TargetError(
            f"no CA for configs/{env} yet ({path} is missing): deploy first"
            f" (make deploy ENV={env}; tls_mode local-ca makes it), or, with tls_mode acme or"
            " off, give the URL yourself (URL=https://... or http://...)"
        )
    return path


def url_for(address: str, port: int = HTTPS_PORT, scheme: str = "https") -> str:
    """The base URL of an address (IPv6 in brackets); the scheme's default port is left out."""
    try:
        host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:
        host = address  # a name
    default = {"https": 443, "http": 80}[scheme]
    return f"{scheme}://{host}" + ("" if port == default else f":{port}")


def vm_address() -> str:
    proc = subprocess.run([*LOCALVM, "address"], capture_output=True, text=True)
    if proc.returncode or not proc.stdout.strip():
        raise TargetError(f"no local VM address ({proc.stderr.strip() or 'not running'})")
    return proc.stdout.strip()


def vm_target(configs: Path = CONFIGS) -> Target:
    """The local VM through its nginx on :443, trusting configs/local's CA."""
    address = vm_address()
    return Target(url_for(address), require_ca(VM_ENV, configs), f"the local VM ({address})")


def given_ca(option: str | None) -> Path | None:
    """A CA file named by the environment (wins) or an option, made absolute; None if neither."""
    chosen = os.environ.get(CA_ENV) or option
    if not chosen:
        return None
    path = Path(chosen).resolve()
    if not path.is_file():
        raise TargetError(f"no CA file {path}")
    return path


def given_target(url: str, ca_option: str | None) -> Target:
    """--host URL: trust the given CA file, else the system's store."""
    url = url.rstrip("/")
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise TargetError(f"not a base URL: {url!r} (https://host[:port])")
    ca = given_ca(ca_option)
    return Target(url, ca, "--host" + (f", CA {ca}" if ca else ""))


def ssl_context(ca: Path | None) -> ssl.SSLContext:
    """A client context that verifies the chain and the host name: against ca alone when given
    (a private CA: nothing else is trusted for this target), else the system's store."""
    return ssl.create_default_context(cafile=str(ca) if ca else None)


def check_certificate(url: str, ca: Path | None, timeout: float = 10) -> str:
    """One TLS handshake with full verification (chain against ca, host name or IP); a short
    description of what was served. Raises TargetError with the reason on failure.

    wrk (4.1.0 here) speaks TLS but verifies nothing (SSL_VERIFY_NONE in its ssl.c): a
    benchmark checks the certificate with this once before wrk runs."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        return "plain http: no certificate"
    host, port = parts.hostname or "", parts.port or HTTPS_PORT
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            ssl_context(ca).wrap_socket(sock, server_hostname=host) as tls,
        ):
            cert = tls.getpeercert() or {}
            version = tls.version()
    except ssl.SSLCertVerificationError as exc:
        raise TargetError(
            f"{url}: the certificate does not verify against {ca or 'the system store'}:"
            f" {exc.verify_message or exc}"
        ) from exc
    except (OSError, ssl.SSLError) as exc:
        raise TargetError(f"{url}: no TLS connection ({exc})") from exc
    return describe_certificate(cert, version)


def describe_certificate(cert: dict, version: str | None) -> str:
    """getpeercert()'s dict in one line: subject CN, issuer CN, the names, expiry, protocol."""

    def cn(field: tuple) -> str:
        return next((v for rdn in field for k, v in rdn if k == "commonName"), "?")

    names = ", ".join(value for _, value in cert.get("subjectAltName", ()))
    return (
        f"{cn(cert.get('subject', ()))} (names {names or 'none'}), issued by"
        f" {cn(cert.get('issuer', ()))}, valid until {cert.get('notAfter', '?')}, {version}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    ca = sub.add_parser("ca", help="the config's CA file (absolute path)")
    ca.add_argument("--env", default=VM_ENV, help="the config under configs/ (default local)")
    sub.add_parser("url", help="the local VM's https URL")
    args = parser.parse_args(argv)
    try:
        if args.what == "ca":
            print(require_ca(args.env))
        else:
            print(url_for(vm_address()))
    except TargetError as exc:
        print(f"{args.what}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
