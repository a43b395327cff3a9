"""The tls role's ACME wrapper (roles/tls/files/tls_acme.py): certbot's arguments, the renewal's
back-off and its state, with a stand-in certbot (a script that exits as told)."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("tls_acme", ROOT / "roles/tls/files/tls_acme.py")
tls_acme = importlib.util.module_from_spec(spec)
# Registered first: dataclasses look their module up there.
sys.modules["tls_acme"] = tls_acme
spec.loader.exec_module(tls_acme)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch):
    # A lineage certbot issued: what renew needs.
    monkeypatch.setattr(tls_acme, "CONFIG_DIR", tmp_path / "letsencrypt")
    (tmp_path / "letsencrypt/renewal").mkdir(parents=True)
    (tmp_path / "letsencrypt/renewal/app.conf").write_text("server = https://acme.test/dir\n")
    certbot = tmp_path / "certbot"
    certbot.write_text(
        '#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\n'
        'echo "Saving debug log to /var/log/letsencrypt/letsencrypt.log" >&2\n'
        'echo refused >&2\nexit "$(cat "$(dirname "$0")/rc")"\n'
    )
    certbot.chmod(0o755)
    (tmp_path / "rc").write_text("0")
    return tls_acme.Settings(
        cert_name="app",
        domains=["a.test", "www.a.test"],
        email="ops@a.test",
        directory="https://acme.test/dir",
        profile="",
        webroot="/var/lib/app/acme",
        certificate=str(tmp_path / "fullchain.pem"),
        key=str(tmp_path / "privkey.pem"),
        ca_bundle="",
        certbot=str(certbot),
        state=str(tmp_path / "state.json"),
        retry_base=60,
        retry_max=600,
        hook="/srv/app/bin/tls-acme deploy /etc/app/tls-acme.json",
    )


def test_the_back_off_doubles_up_to_its_most():
    assert [tls_acme.backoff(n, 60, 600) for n in range(1, 7)] == [60, 120, 240, 480, 600, 600]


def test_issuing_asks_for_every_name_through_the_webroot_and_keeps_a_current_certificate(settings):
    args = tls_acme.issue_args(settings, force=False)
    assert args[0] == "certonly"
    assert args[args.index("--webroot-path") + 1] == "/var/lib/app/acme"
    assert [args[i + 1] for i, a in enumerate(args) if a == "--domain"] == ["a.test", "www.a.test"]
    assert args[args.index("--server") + 1] == "https://acme.test/dir"
    assert args[args.index("--deploy-hook") + 1] == settings.hook
    assert "--keep-until-expiring" in args and "--force-renewal" not in args
    assert "--preferred-profile" not in args


def test_another_server_or_a_profile_is_asked_for_as_such(settings):
    args = tls_acme.issue_args(replace(settings, profile="shortlived"), force=True)
    assert args[args.index("--preferred-profile") + 1] == "shortlived"
    assert "--force-renewal" in args and "--keep-until-expiring" not in args


def test_a_failed_renewal_waits_before_the_next_try_and_says_so(settings, capsys):
    Path(settings.certbot).with_name("rc").write_text("1")
    assert tls_acme.renew(settings, now=1000.0) == 1
    assert json.loads(Path(settings.state).read_text()) == {"failures": 1, "next_try": 1060.0}
    assert (
        "renewal failed (1 in a row), still serving the current certificate"
        in capsys.readouterr().err
    )
    # Within the wait: certbot is not run, and that is no failure.
    Path(settings.certbot).with_name("args").unlink()
    assert tls_acme.renew(settings, now=1030.0) == 0
    assert not Path(settings.certbot).with_name("args").exists()
    assert "backing off after 1 failed renewal(s)" in capsys.readouterr().err
    # After it: tried again, and a second failure waits twice as long.
    assert tls_acme.renew(settings, now=1061.0) == 1
    assert json.loads(Path(settings.state).read_text()) == {"failures": 2, "next_try": 1181.0}


def test_a_renewal_that_works_again_clears_the_back_off(settings, capsys):
    Path(settings.state).write_text(json.dumps({"failures": 3, "next_try": 0.0}))
    assert tls_acme.renew(settings, now=5000.0) == 0
    assert json.loads(Path(settings.state).read_text()) == {"failures": 0, "next_try": 0.0}
    assert "works again after 3 failure(s)" in capsys.readouterr().err
    args = Path(settings.certbot).with_name("args").read_text().split()
    assert args[:3] == ["renew", "--cert-name", "app"] and "--non-interactive" in args


def test_a_refused_first_certificate_fails_with_the_clients_reason(settings, capsys):
    Path(settings.certbot).with_name("rc").write_text("1")
    assert tls_acme.issue(settings) == 1
    # certbot's reason, without the lines it prints with every failure.
    assert "no certificate from https://acme.test/dir: refused\n" in capsys.readouterr().err


def test_the_ca_bundle_is_what_certbot_trusts_the_server_by(settings, tmp_path):
    env_dump = tmp_path / "certbot"
    env_dump.write_text('#!/bin/sh\necho "$REQUESTS_CA_BUNDLE" > "$(dirname "$0")/env"\n')
    tls_acme.certbot(replace(settings, ca_bundle="/etc/pebble/ca.pem"), "renew")
    assert (tmp_path / "env").read_text().strip() == "/etc/pebble/ca.pem"


def test_before_the_first_certificate_the_timer_waits_for_the_deploy(settings, capsys):
    (tls_acme.CONFIG_DIR / "renewal/app.conf").unlink()
    assert tls_acme.renew(settings, now=1000.0) == 0
    assert not Path(settings.certbot).with_name("args").exists()
    assert not Path(settings.state).exists()
    assert "the deploy asks for the first one" in capsys.readouterr().err


def test_the_server_of_the_lineage_is_read_from_certbots_renewal_configuration(settings):
    assert tls_acme.renewal_server(settings) == "https://acme.test/dir"
