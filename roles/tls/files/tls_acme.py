"""The site's certificate from an ACME server, through certbot; installed by the tls role.

    tls-acme issue    at deploy: a certificate for the configured names from the configured
                      server, unless the site has one already (prints "issued" or "kept")
    tls-acme renew    from the systemd timer: certbot renews when ARI, or a third of the
                      lifetime left, says; after a failure it waits, doubling the wait each time
    tls-acme deploy   certbot's deploy hook: installs the new certificate where nginx reads it,
                      and reloads nginx only once `nginx -t` accepts it

Settings: the JSON file of argument 2 (written by the role). A failure keeps the certificate
served until then, says why on stderr (the journal of the timer's unit) and exits 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# certbot's, where a lineage's renewal configuration and live files are.
CONFIG_DIR = Path("/etc/letsencrypt")
# Lines certbot prints with any failure: not the reason.
CERTBOT_BOILERPLATE = ("Saving debug log", "Ask for help", "An unexpected error occurred")


@dataclass(frozen=True)
class Settings:
    cert_name: str
    domains: list[str]
    email: str
    directory: str
    profile: str
    webroot: str
    certificate: str
    key: str
    ca_bundle: str
    certbot: str
    state: str
    retry_base: int
    retry_max: int
    hook: str

    @classmethod
    def load(cls, path: str) -> Settings:
        return cls(**json.loads(Path(path).read_text()))


def log(message: str) -> None:
    print(f"tls-acme: {message}", file=sys.stderr, flush=True)


def certbot(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if settings.ca_bundle:
        # A test server's own CA (Pebble): the one certbot's requests trust.
        env["REQUESTS_CA_BUNDLE"] = settings.ca_bundle
    return subprocess.run(
        [settings.certbot, *args, "--non-interactive"], env=env, capture_output=True, text=True
    )


def renewal_server(settings: Settings) -> str | None:
    """The directory URL the lineage was issued from (certbot's renewal configuration)."""
    conf = CONFIG_DIR / "renewal" / f"{settings.cert_name}.conf"
    if not conf.exists():
        return None
    for line in conf.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "server":
            return value.strip()
    return None


def issue_args(settings: Settings, force: bool) -> list[str]:
    args = [
        "certonly",
        "--webroot",
        "--webroot-path",
        settings.webroot,
        "--cert-name",
        settings.cert_name,
        "--server",
        settings.directory,
        "--email",
        settings.email,
        "--agree-tos",
        "--no-eff-email",
        "--key-type",
        "ecdsa",
        "--elliptic-curve",
        "secp256r1",
        "--deploy-hook",
        settings.hook,
        # Names changed: the lineage takes the new ones.
        "--expand",
    ]
    for domain in settings.domains:
        args += ["--domain", domain]
    if settings.profile:
        args += ["--preferred-profile", settings.profile]
    # Same names and server: nothing until it is due. Another server: a certificate from it now.
    args.append("--force-renewal" if force else "--keep-until-expiring")
    return args


def failure_reason(result: subprocess.CompletedProcess[str]) -> str:
    """certbot's own words: its last lines (a challenge's detail goes to stdout, the summary to
    stderr; the rest to its log file)."""
    lines = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and not line.startswith(CERTBOT_BOILERPLATE)
    ]
    return " / ".join(lines[-10:]) or f"certbot exited {result.returncode}"


def issue(settings: Settings) -> int:
    before = fingerprint(settings.certificate)
    force = renewal_server(settings) not in (None, settings.directory)
    result = certbot(settings, *issue_args(settings, force))
    if result.returncode != 0:
        log(f"no certificate from {settings.directory}: {failure_reason(result)}")
        return 1
    # certbot's deploy hook installs only what it issues: a lineage kept as it was, but not
    # installed (a host whose files were replaced), is installed here.
    live = CONFIG_DIR / "live" / settings.cert_name
    installed = fingerprint(settings.certificate) == fingerprint(str(live / "fullchain.pem"))
    if not installed and install(settings, live) != 0:
        return 1
    print("issued" if fingerprint(settings.certificate) != before else "kept")
    return 0


def backoff(failures: int, base: int, most: int) -> int:
    """Seconds to wait after the n-th failure in a row: base, 2 base, 4 base... up to most."""
    return min(base * 2 ** max(failures - 1, 0), most)


def read_state(path: str) -> dict[str, float]:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return {"failures": 0, "next_try": 0.0}


def write_state(path: str, state: dict[str, float]) -> None:
    Path(path).write_text(json.dumps(state) + "\n")


def renew(settings: Settings, now: float | None = None) -> int:
    now = time.time() if now is None else now
    if renewal_server(settings) is None:
        log("no certificate from the ACME server yet: the deploy asks for the first one")
        return 0
    state = read_state(settings.state)
    if now < state["next_try"]:
        log(
            f"backing off after {int(state['failures'])} failed renewal(s): next try at "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(state['next_try']))} UTC"
        )
        return 0
    before = fingerprint(settings.certificate)
    result = certbot(
        settings, "renew", "--cert-name", settings.cert_name, "--no-random-sleep-on-renew"
    )
    if result.returncode == 0:
        if fingerprint(settings.certificate) != before:
            log("renewed: nginx serves the new certificate")
        if state["failures"]:
            log(f"renewal works again after {int(state['failures'])} failure(s)")
        write_state(settings.state, {"failures": 0, "next_try": 0.0})
        return 0
    failures = int(state["failures"]) + 1
    wait = backoff(failures, settings.retry_base, settings.retry_max)
    write_state(settings.state, {"failures": failures, "next_try": now + wait})
    log(
        f"renewal failed ({failures} in a row), still serving the current certificate; "
        f"next try in {wait} s: {failure_reason(result)}"
    )
    return 1


def fingerprint(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None


def install(settings: Settings, lineage: Path) -> int:
    """Put the lineage's chain and key where nginx reads them; reload nginx once `nginx -t`
    accepts them, else put the old ones back: nginx keeps serving either way."""
    saved = {target: fingerprint(target) for target in (settings.certificate, settings.key)}
    replace(str(lineage / "fullchain.pem"), settings.certificate, 0o644)
    replace(str(lineage / "privkey.pem"), settings.key, 0o600)
    test = subprocess.run(["nginx", "-t", "-q"], capture_output=True, text=True)
    if test.returncode != 0:
        for target, content in saved.items():
            if content is not None:
                write_atomically(target, content, 0o600 if target == settings.key else 0o644)
        log(f"nginx refused the new certificate, the old one stays: {test.stderr.strip()}")
        return 1
    subprocess.run(["systemctl", "reload", "nginx"], check=True)
    log(f"installed the certificate of {lineage.name} and reloaded nginx")
    return 0


def replace(source: str, target: str, mode: int) -> None:
    write_atomically(target, Path(source).read_bytes(), mode)


def write_atomically(target: str, content: bytes, mode: int) -> None:
    directory = os.path.dirname(target)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tls-acme-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("issue", "renew", "deploy"):
        print(__doc__, file=sys.stderr)
        return 2
    settings = Settings.load(argv[2])
    if argv[1] == "issue":
        return issue(settings)
    if argv[1] == "renew":
        return renew(settings)
    return install(settings, Path(os.environ["RENEWED_LINEAGE"]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
