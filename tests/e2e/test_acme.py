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
# Certificates of a few minutes: certbot renews with half of such a life left.
VALIDITY = 180
INTERVAL = 10
UNIT = "sample_app-tls-renew"


@pytest.fixture(scope="module")
def acme(stack: Stack) -> Iterator[pebble.Pebble]:
    server = pebble.start(stack, DOMAIN, VALIDITY)
    result = stack.deploy("deploy-acme", **DEPLOY_VARS, **server.deploy_vars(INTERVAL))
    assert result.rc == 0, result.tail()
    yield server
    pebble.stop(stack)
    # The next module finds the stack as the session's deploys leave it: local-ca.
    restored = stack.deploy("deploy-after-acme", **DEPLOY_VARS)
    assert restored.rc == 0, restored.tail()


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
    # The timer would renew so short-lived a certificate meanwhile: only the deploy acts here.
    acme.hold_renewals(600)
    try:
        _, before = acme.served()
        again = acme.stack.deploy("deploy-acme-again", **DEPLOY_VARS, **acme.deploy_vars(INTERVAL))
        assert again.rc == 0, again.tail()
        assert again.changed == 0, again.tail()
        assert acme.served()[1] == before
    finally:
        acme.release_renewals()


def test_renewal_happens_by_itself_and_no_request_fails(acme):
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
        wait_for("a renewed certificate served", lambda: acme.served()[1] != first, VALIDITY, 2)
    finally:
        stop.set()
        loop.join()
    failed = [o for o in outcomes if not (isinstance(o, tuple) and o[0] == 200)]
    FIGURES.append(f"acme renewal: {len(outcomes)} requests during it, {len(failed)} failed")
    assert len(outcomes) > 50 and not failed, failed[:3]
    assert "renewed: nginx serves the new certificate" in renewal_log(acme.stack, since)


def test_without_the_acme_server_the_certificate_stays_and_renewal_recovers(acme):
    since = vm_time(acme.stack)
    _, before = acme.served()
    acme.cut()
    try:
        # Due again with half its life left: the tries fail, and say so.
        failed = lambda: "renewal failed" in renewal_log(acme.stack, since)  # noqa: E731
        wait_for("a failed renewal in the log", failed, VALIDITY, 2)
        status, serial = acme.served()
        assert (status, serial) == (200, before)
    finally:
        acme.mend()
    recovered = lambda: "works again" in renewal_log(acme.stack, since)  # noqa: E731
    wait_for("renewal working again", recovered, 6 * INTERVAL, 2)
    assert acme.served()[1] != before


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
