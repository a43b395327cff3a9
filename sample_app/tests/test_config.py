import pytest
from flask import request

from sample_app import create_app
from sample_app.config import ConfigError, RateLimit


@pytest.fixture
def base(tmp_path):
    return {"SECRET_KEY": "test", "STORE_URL": f"sqlite:///{tmp_path}/s.db"}


def settings(app):
    return app.extensions["sample_app"].settings


def test_defaults(base):
    app = create_app(base)
    s = settings(app)
    assert (s.captcha_ttl, s.captcha_length, s.oracle_secret) == (300, 5, "")
    assert s.rate_limit_create == s.rate_limit_verify == RateLimit(30, 60)
    assert (s.events_interval, s.events_max_seconds, s.trusted_proxies) == (1.0, 30.0, 0)
    assert app.config["MAX_CONTENT_LENGTH"] == 16384
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert app.config["SESSION_COOKIE_SECURE"] is False


def test_values_come_from_flask_prefixed_environment(monkeypatch, tmp_path):
    env = {
        "FLASK_SECRET_KEY": "12345",
        "FLASK_STORE_URL": f"sqlite:///{tmp_path}/env.db",
        "FLASK_CAPTCHA_TTL": "60",
        "FLASK_CAPTCHA_LENGTH": "7",
        "FLASK_CAPTCHA_ORACLE_SECRET": "007",
        "FLASK_RATE_LIMIT_CREATE": "5/10",
        "FLASK_RATE_LIMIT_VERIFY": "6/11",
        "FLASK_MAX_CONTENT_LENGTH": "1000",
        "FLASK_EVENTS_INTERVAL": "0.5",
        "FLASK_EVENTS_MAX_SECONDS": "12",
        "FLASK_TRUSTED_PROXIES": "1",
        "FLASK_SESSION_COOKIE_SAMESITE": "None",
        "FLASK_SESSION_COOKIE_SECURE": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    app = create_app()
    s = settings(app)
    assert s.store_url == f"sqlite:///{tmp_path}/env.db"
    assert (s.captcha_ttl, s.captcha_length) == (60, 7)
    # Secrets stay the exact strings: JSON would have made these the int 7 and 12345.
    assert s.oracle_secret == "007"
    assert app.config["SECRET_KEY"] == "12345"
    assert s.rate_limit_create == RateLimit(5, 10)
    assert s.rate_limit_verify == RateLimit(6, 11)
    assert app.config["MAX_CONTENT_LENGTH"] == 1000
    assert (s.events_interval, s.events_max_seconds, s.trusted_proxies) == (0.5, 12.0, 1)
    assert app.config["SESSION_COOKIE_SAMESITE"] == "None"
    assert app.config["SESSION_COOKIE_SECURE"] is True


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("RATE_LIMIT_CREATE", "abc"),
        ("RATE_LIMIT_VERIFY", "30"),
        ("RATE_LIMIT_VERIFY", "0/60"),
        ("RATE_LIMIT_CREATE", "30/-1"),
        ("CAPTCHA_TTL", 0),
        ("CAPTCHA_TTL", -5),
        ("CAPTCHA_TTL", "soon"),
        ("CAPTCHA_TTL", True),
        ("CAPTCHA_LENGTH", 0),
        ("CAPTCHA_LENGTH", 33),
        ("CAPTCHA_ORACLE_SECRET", 42),
        ("STORE_URL", "memcached://localhost"),
        ("STORE_URL", "sqlite:///relative.db"),
        ("STORE_URL", "sqlite://host/x.db"),
        ("MAX_CONTENT_LENGTH", 0),
        ("EVENTS_INTERVAL", 0),
        ("EVENTS_INTERVAL", "nan"),
        ("EVENTS_MAX_SECONDS", -1),
        ("TRUSTED_PROXIES", -1),
        ("TRUSTED_PROXIES", 1.5),
        ("SESSION_COOKIE_SAMESITE", "sometimes"),
        ("SESSION_COOKIE_SECURE", "yes"),
    ],
)
def test_invalid_value_is_a_clear_error(base, key, value):
    with pytest.raises(ConfigError, match=key):
        create_app(base | {key: value})


def test_samesite_none_needs_secure_cookies(base):
    with pytest.raises(ConfigError, match="SESSION_COOKIE_SECURE"):
        create_app(base | {"SESSION_COOKIE_SAMESITE": "None"})
    app = create_app(base | {"SESSION_COOKIE_SAMESITE": "None", "SESSION_COOKIE_SECURE": True})
    assert app.config["SESSION_COOKIE_SAMESITE"] == "None"


def test_every_invalid_value_is_reported_at_once(base):
    with pytest.raises(ConfigError) as error:
        create_app(base | {"CAPTCHA_TTL": 0, "RATE_LIMIT_CREATE": "abc"})
    assert "CAPTCHA_TTL" in str(error.value)
    assert "RATE_LIMIT_CREATE" in str(error.value)


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "redis://:pw@10.0.0.1:6380/2", "unix:///run/r.sock"]
)
def test_redis_urls_are_accepted_without_connecting(base, url):
    assert settings(create_app(base | {"STORE_URL": url})).store_url == url


def test_trusted_proxies_take_the_client_address_from_x_forwarded_for(base):
    app = create_app(base | {"TRUSTED_PROXIES": 1})
    seen = []
    app.before_request(lambda: seen.append(request.remote_addr))
    app.test_client().get(
        "/healthz",
        headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.9"},
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    # Only the last hop (what nginx appended) is trusted; a forged first entry is ignored.
    assert seen == ["203.0.113.9"]


def test_without_trusted_proxies_x_forwarded_for_is_ignored(base):
    app = create_app(base)
    seen = []
    app.before_request(lambda: seen.append(request.remote_addr))
    app.test_client().get(
        "/healthz",
        headers={"X-Forwarded-For": "203.0.113.9"},
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    assert seen == ["127.0.0.1"]
