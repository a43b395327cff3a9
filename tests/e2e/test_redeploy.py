"""Redeploys during a locust load, under each app server: a changed version reaches every worker
by a graceful reload and no request fails; a version whose health check fails never serves (the
check before the switch), or is rolled back when it fails after the switch; an nginx site that
nginx -t refuses changes nothing, and one nginx cannot run goes back to the one it ran. The
tests run in order, each from where the last one left off.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from load import BackgroundLoad
from releases import (
    CURRENT,
    ORIGINAL_VERSION,
    RELEASES,
    app_version,
    assert_serving,
    deploy,
    releases_on_host,
    serving_release,
)
from stack import Stack

# Enough to see that the load ran through the whole step (the flow's ~16 requests/s for
# 6 users here, over a deploy of 30 s or more).
MIN_REQUESTS = 100
SITE = "/etc/nginx/sites-available/sample_app.conf"
KEEP_RELEASES = 3  # app_keep_releases' default


def break_health(package: Path) -> None:
    """/healthz answers 500; the captcha endpoints still work."""
    pages = package / "pages.py"
    text = pages.read_text()
    ok = 'return jsonify(status="ok", store="ok", version=__version__, host=host), 200'
    assert ok in text
    pages.write_text(text.replace(ok, ok.replace("), 200", "), 500")))


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("app-versions")


def test_a_new_version_reaches_every_worker_without_a_failed_request(
    deployed: Stack, versions: Path
):
    before, master = serving_release(deployed), deployed.master_pid()
    version = f"0.2.0+{deployed.server}"
    with BackgroundLoad(f"{deployed.server}: redeploy a changed version") as load:
        sources = app_version(versions, version)
        result = deploy(deployed, f"{deployed.server}-v2", app_sources=sources)
    assert result.rc == 0, result.tail()
    sent = load.stop()
    assert sent.requests >= MIN_REQUESTS, sent.line()
    assert sent.failures == 0, sent.failure_messages()
    after = serving_release(deployed)
    assert after != before
    assert {before, after} <= set(releases_on_host(deployed))
    # A reload, not a restart: the master served throughout.
    assert deployed.master_pid() == master
    assert_serving(deployed, after, version)


def deploy_broken(stack: Stack, versions: Path, step: str, **extra: object):
    """Deploy a version whose /healthz answers 500, under a load: the deploy and the load."""
    version = f"0.3.0+{stack.server}.broken"
    with BackgroundLoad(f"{stack.server}: {step}") as load:
        result = deploy(
            stack, f"{stack.server}-{step.replace(' ', '-')}",
            app_sources=app_version(versions, version, break_health), **extra,
        )  # fmt: skip
    return result, load.stop()


def test_a_version_failing_its_health_check_never_serves(deployed: Stack, versions: Path):
    serving = serving_release(deployed)
    result, sent = deploy_broken(deployed, versions, "broken version")
    assert result.rc != 0, result.tail()
    assert "failed its check before it serves" in result.output, result.tail()
    assert "answered 500" in result.output, result.tail()
    assert sent.failures == 0, sent.failure_messages()
    assert serving_release(deployed) == serving
    assert_serving(deployed, serving, f"0.2.0+{deployed.server}")


def test_a_version_failing_after_the_switch_is_rolled_back(deployed: Stack, versions: Path):
    """Without the check before the switch (release_canary_enabled: false), the broken version
    serves until its health check fails through nginx: the deploy then switches back and
    reloads again. Its captcha endpoints work, so only /healthz requests may fail meanwhile."""
    serving = serving_release(deployed)
    result, sent = deploy_broken(
        deployed, versions, "broken version rolled back", release_canary_enabled=False
    )
    assert result.rc != 0, result.tail()
    assert f"rolled back to release {serving}" in result.output, result.tail()
    assert sent.requests >= MIN_REQUESTS, sent.line()
    assert sent.failures == sent.failures_of("/healthz"), sent.failure_messages()
    assert serving_release(deployed) == serving
    assert_serving(deployed, serving, f"0.2.0+{deployed.server}")


def test_an_nginx_site_that_nginx_refuses_changes_nothing(deployed: Stack):
    site = hashlib.sha256(deployed.ssh(f"cat {SITE}").stdout.encode()).hexdigest()
    with BackgroundLoad(f"{deployed.server}: nginx refuses the site") as load:
        result = deploy(
            deployed, f"{deployed.server}-bad-nginx", nginx_server_extra="no_such_directive on;"
        )
    sent = load.stop()
    assert result.rc != 0, result.tail()
    assert "failed to validate" in result.output, result.tail()
    assert "no_such_directive" in result.output, result.tail()
    assert hashlib.sha256(deployed.ssh(f"cat {SITE}").stdout.encode()).hexdigest() == site
    deployed.ssh("nginx -t -q")
    assert sent.failures == 0, sent.failure_messages()
    assert deployed.get("/healthz").status == 200


def test_an_nginx_that_cannot_bind_is_rolled_back_and_runs(deployed: Stack):
    """nginx -t does not bind: a port another program holds passes it, then fails the restart.
    The play fails with nginx's reason, the site as it was, and nginx serving again."""
    site = deployed.ssh(f"cat {SITE}").stdout
    deployed.ssh("systemd-run --collect --unit=e2e-squatter python3 -m http.server 8081")
    try:
        result = deploy(deployed, f"{deployed.server}-port-taken", nginx_listen_port=8081)
    finally:
        deployed.ssh("systemctl stop e2e-squatter")
    try:
        assert result.rc != 0, result.tail()
        assert "bind() to 0.0.0.0:8081 failed (98: Address already in use)" in result.output
        assert "The previous configuration is back in /etc/nginx and nginx runs it" in result.output
        assert deployed.ssh(f"cat {SITE}").stdout == site
        deployed.ssh("systemctl is-active nginx")
        # On the host: the firewall follows the inventory, which opened 8081 in place of 80.
        assert deployed.loopback("GET", "/healthz").status == 200
    finally:
        # The inventory as it was: port 80 open again, for the tests that follow.
        back = deploy(deployed, f"{deployed.server}-port-back")
        assert back.rc == 0, back.tail()
    assert deployed.get("/healthz").status == 200


def test_a_reload_nginx_cannot_apply_is_rolled_back(deployed: Stack):
    """A reload nginx cannot apply (here: one address of the port it holds on all) keeps the
    old workers and says nothing: nginx-apply sees no new worker and puts the files back."""
    site = deployed.ssh(f"cat {SITE}").stdout
    deployed.ssh(f"sed -i 's/listen \\*:80 /listen 127.0.0.1:80 /' {SITE} && nginx -t -q")
    assert deployed.ssh(f"cat {SITE}").stdout != site
    result = deployed.ssh("/srv/sample_app/bin/nginx-apply reload", check=False)
    assert result.returncode == 1, result
    assert "bind() to 127.0.0.1:80 failed" in result.stderr, result.stderr
    assert deployed.ssh(f"cat {SITE}").stdout == site
    assert deployed.get("/healthz").status == 200


def test_the_original_version_comes_back_and_old_releases_go(deployed: Stack):
    with BackgroundLoad(f"{deployed.server}: redeploy the original version") as load:
        result = deploy(deployed, f"{deployed.server}-original")
    assert result.rc == 0, result.tail()
    sent = load.stop()
    assert sent.failures == 0, sent.failure_messages()
    serving = serving_release(deployed)
    assert_serving(deployed, serving, ORIGINAL_VERSION)
    kept = releases_on_host(deployed)
    assert serving in kept and len(kept) <= KEEP_RELEASES, kept


def test_make_rollback_goes_back_and_a_second_one_undoes_it(deployed: Stack):
    """The last deploy replaced the 0.2.0 version: a rollback brings it back, gracefully."""
    original = serving_release(deployed)
    with BackgroundLoad(f"{deployed.server}: make rollback, twice") as load:
        back = deployed.rollback(f"{deployed.server}-rollback")
        assert back.rc == 0, back.tail()
        previous = serving_release(deployed)
        assert previous != original
        assert_serving(deployed, previous, f"0.2.0+{deployed.server}")
        assert stream_pool_releases(deployed) == {previous}
        again = deployed.rollback(f"{deployed.server}-rollback-again")
        assert again.rc == 0, again.tail()
    sent = load.stop()
    assert sent.failures == 0, sent.failure_messages()
    assert serving_release(deployed) == original
    assert_serving(deployed, original, ORIGINAL_VERSION)
    assert stream_pool_releases(deployed) == {original}


def stream_pool_releases(deployed: Stack) -> set[str]:
    """The releases the stream pool's processes run: their mapped files (gevent's and
    Python's extension modules) name the release directory the `current` link resolved to."""
    pids = deployed.server_pids(deployed.server, pool="streams")
    assert pids
    maps = " ".join(f"/proc/{pid}/maps" for pid in pids)
    out = deployed.ssh(f"grep -oh '{RELEASES}/[^/]*' {maps} | sort -u").stdout
    return {line.rsplit("/", 1)[1] for line in out.split()}


def test_a_deploy_reloads_workers_an_interrupted_one_left_behind(deployed: Stack):
    """An interrupted deploy may have switched the link but not reloaded: the next one finds
    the link right and the workers on another release, and reloads them."""
    serving = serving_release(deployed)
    back = deployed.rollback(f"{deployed.server}-rollback-to-interrupt")
    assert back.rc == 0, back.tail()
    behind = serving_release(deployed)
    deployed.ssh(f"ln -sfn {RELEASES}/{serving} {CURRENT}")  # the link only, no reload
    with BackgroundLoad(f"{deployed.server}: deploy after an interrupted one") as load:
        result = deploy(deployed, f"{deployed.server}-after-interrupted")
    assert result.rc == 0, result.tail()
    sent = load.stop()
    assert sent.failures == 0, sent.failure_messages()
    assert behind != serving
    assert_serving(deployed, serving, ORIGINAL_VERSION)
