"""tls_mode acme against a real ACME server (Pebble, on the VM): a certificate issued through the
running nginx, renewed by the timer with no failed request, kept while the server is away, and a
refusal that fails the deploy and leaves the site as it was. (make e2e runs this on a VM of its
own: its waits would lengthen the lane of the other single-VM tests.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import pebble
from conftest import DEPLOY_VARS
from stack import FIGURES, Stack, wait_for

DOMAIN = "acme.test"
# Pebble's renewal window (ARI) is a certificate's whole life, and certbot renews at a random
# point in it: one of 90 days stays through the tests that need the same serial, one of a few
# minutes gets renewed within them.
LONG = 90 * 24 * 3600
SHORT = 180
INTERVAL = 10
UNIT = "sample_app-tls-renew"


@pytest.fixture(scope="module")
def acme(stack: Stack) -> Iterator[pebble.Pebble]:
    server = pebble.start(stack, DOMAIN, LONG)
    result = stack.deploy("deploy-acme", **DEPLOY_VARS, **server.deploy_vars(INTERVAL))
    assert result.rc == 0, result.tail()
    yield server
    pebble.stop(stack)
    # The next module finds the stack as the session's deploys leave it: local-ca.
    restored = stack.deploy("deploy-after-acme", **DEPLOY_VARS)
    assert restored.rc == 0, restored.tail()


@pytest.fixture(scope="module")
def short_lived(acme: pebble.Pebble) -> pebble.Pebble:
    """Pebble started again, issuing certificates of SHORT seconds, and the site holding one (a
    new Pebble knows no earlier account or certificate: the deploy asks for a first one)."""
    server = pebble.start(acme.stack, DOMAIN, SHORT)
    result = server.stack.deploy("deploy-acme-short", **DEPLOY_VARS, **server.deploy_vars(INTERVAL))
    assert result.rc == 0, result.tail()
    return server


def vm_time(stack: Stack) -> str:
    return stack.ssh("date +%s").stdout.strip()


def renewal_log(stack: Stack, since: str) -> str:
    """What the renewal's unit logged since `since` (vm_time)."""
    return stack.ssh(f"journalctl -u {UNIT} -o cat --no-pager --since @{since}").stdout


def test_the_certificate_comes_through_nginx_and_verifies_against_pebbles_root(acme):
    status, serial = acme.served()
    assert status == 200
    assert serial == acme.stack.installed_serial()
    issuer = acme.stack.ssh("openssl x509 -noout -issuer -in /etc/ssl/sample_app/fullchain.pem")
    assert "Pebble" in issuer.stdout
    assert acme.stack.installed_key_mode() == ["600", "root"]


def test_a_second_deploy_reissues_nothing(acme):
    _, before = acme.served()
    again = acme.stack.deploy("deploy-acme-again", **DEPLOY_VARS, **acme.deploy_vars(INTERVAL))
    assert again.rc == 0, again.tail()
    assert again.changed == 0, again.tail()
    assert acme.served()[1] == before


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"tls_domains": [pebble.REFUSED]}, "forbidden by policy"),
        ({"tls_acme_directory": "https://127.0.0.1:9/dir"}, "Connection refused"),
    ],
    ids=["refused", "unreachable"],
)
def test_an_acme_server_that_says_no_fails_the_deploy_and_the_site_keeps_its_certificate(
    acme, change, reason
):
    _, before = acme.served()
    values = {**acme.deploy_vars(INTERVAL), **change}
    result = acme.stack.deploy("deploy-acme-refused", **DEPLOY_VARS, **values)
    assert result.rc != 0
    assert "no certificate from" in result.output and reason in result.output, result.tail()
    assert acme.served() == (200, before)


def test_renewal_happens_by_itself_and_no_request_fails(short_lived):
    acme = short_lived
    since = vm_time(acme.stack)
    _, first = acme.served()
    outcomes: list[object] = []
    stop = threading.Event()

    def requests() -> None:
        while not stop.is_set():
            try:
                outcomes.append(acme.served())
            except OSError as error:
                outcomes.append(error)
            time.sleep(0.2)

    loop = threading.Thread(target=requests)
    loop.start()
    try:
        # Due at a random point of its life (ARI), seen within a timer's tick or two after.
        renewed = lambda: acme.served()[1] != first  # noqa: E731
        wait_for("a renewed certificate served", renewed, SHORT + 3 * INTERVAL, 2)
        # That point may come at once: the loop goes on with the new certificate a while, so
        # that requests before, across and after nginx's reload are all counted.
        time.sleep(15)
    finally:
        stop.set()
        loop.join()
    failed = [o for o in outcomes if not (isinstance(o, tuple) and o[0] == 200)]
    after = [o for o in outcomes if isinstance(o, tuple) and o[1] != first]
    FIGURES.append(f"acme renewal: {len(outcomes)} requests during it, {len(failed)} failed")
    assert len(after) >= 20 and not failed, (len(outcomes), len(after), failed[:3])
    assert "renewed: nginx serves the new certificate" in renewal_log(acme.stack, since)


def test_without_the_acme_server_the_certificate_stays_and_renewal_recovers(short_lived):
    acme = short_lived
    since = vm_time(acme.stack)
    _, before = acme.served()
    acme.cut()
    try:
        # Due within its life (at half of it when certbot cannot ask the server for the window):
        # the tries fail, and say so.
        failed = lambda: "renewal failed" in renewal_log(acme.stack, since)  # noqa: E731
        wait_for("a failed renewal in the log", failed, SHORT, 2)
        status, serial = acme.served()
        assert (status, serial) == (200, before)
    finally:
        acme.mend()
    recovered = lambda: "works again" in renewal_log(acme.stack, since)  # noqa: E731
    wait_for("renewal working again", recovered, 6 * INTERVAL, 2)
    assert acme.served()[1] != before
