"""A wrong inventory value stops the play at validation, before anything on the VM changes."""

from __future__ import annotations

import pytest

from stack import Stack

BAD_VALUES = [
    ({"app_server": "apache"}, "app_server must be one of: uwsgi, gunicorn, got: apache"),
    ({"app_workers": 0}, "app_workers must be an integer from 1 to 512, got 0"),
    ({"nginx_listen_port": "80x"}, "nginx_listen_port"),
    ({"nginx_listen_port": 70000}, "nginx_listen_port must be an integer from 1 to 65535"),
    # Two listeners on one port: nginx would pass nginx -t, then fail to bind.
    (
        {"nginx_listen_port": 9001},
        "nginx_listen_port (9001) and supervisor_console_port (9001) share a port",
    ),
    (
        {"pdb_enabled": True, "pdb_base_port": 6378},
        "redis_port (6379) and pdb_base_port + 0..app_workers (6378-",
    ),
    ({"nginx_app_read_timeout": 5}, "must exceed app_request_timeout"),
    (
        {"app_wsgi_app": "sample_app.wsgi"},
        "app_wsgi_app must look like module:name or module:factory()",
    ),
    # The toolkit would refuse it when the app server starts, after the host changed.
    (
        {"profiling_keep_headers": ["Host", "User Agent"]},
        "profiling_keep_headers and profiling_scrub_headers must hold header names only",
    ),
    # An nginx location of its own for each: a path that is not one would break nginx -t.
    ({"app_stream_paths": ["/events {"]}, "app_stream_paths start with /"),
    (
        {"app_streams_per_worker": 0},
        "app_streams_per_worker must be an integer from 1 to 10000, got 0",
    ),
    # The VM's release, unknown to the roles: as a host on another system is met.
    ({"preflight_platforms": {"Debian": ["sid"]}}, "this bundle deploys to Debian sid only"),
]
# HTTPS: the ACME client would be refused by the CA after the host changed (or never asked).
DOMAIN, EMAIL = ["app.example.org"], "ops@example.org"
TLS_BAD_VALUES = [
    pytest.param(
        {"tls_mode": "https"},
        "tls_mode must be one of: acme, local-ca, off, got: https",
        id="tls_mode",
    ),
    pytest.param(
        {"tls_mode": "acme", "tls_acme_email": EMAIL},
        "tls_mode acme needs tls_domains",
        id="tls_acme-no-domain",
    ),
    pytest.param(
        {"tls_mode": "acme", "tls_domains": DOMAIN},
        "tls_mode acme needs tls_acme_email",
        id="tls_acme-no-email",
    ),
    # In any mode: the default (local-ca) too.
    pytest.param(
        {"tls_domains": ["192.0.2.10"]},
        "tls_domains: 192.0.2.10 is an IP address",
        id="tls_domains",
    ),
    pytest.param(
        {"tls_mode": "acme", "tls_domains": DOMAIN, "tls_acme_email": "ops.example.org"},
        "tls_acme_email: ops.example.org is not an email address",
        id="tls_acme_email",
    ),
]


@pytest.mark.parametrize(
    ("extra_vars", "message"),
    [pytest.param(v, m, id=next(iter(v))) for v, m in BAD_VALUES] + TLS_BAD_VALUES,
)
def test_bad_value_stops_the_play_before_any_change(stack: Stack, extra_vars, message):
    stack.ssh("touch /run/before-bad-deploy")
    result = stack.deploy("bad-" + next(iter(extra_vars)), **extra_vars)
    assert result.rc != 0, f"the play accepted {extra_vars}:\n{result.tail()}"
    assert message in result.output, result.tail()
    assert result.changed == 0, result.tail()
    # Nothing the roles manage was touched: packages, configs, code, runtime dirs. (Ansible's
    # temp files live under /root; an SSH login itself writes /run/motd.dynamic.)
    touched = stack.ssh(
        "find /etc /srv /usr /var/lib/dpkg -xdev -newer /run/before-bad-deploy;"
        " find /run -maxdepth 1 -name 'sample_app*' -newer /run/before-bad-deploy"
    ).stdout.split()
    assert touched == [], f"{extra_vars} changed the host: {touched}"
