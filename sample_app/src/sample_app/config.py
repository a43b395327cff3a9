"""Defaults and validation of the app's configuration (see README.md for every variable).

``app.config.from_prefixed_env()`` parses each ``FLASK_*`` value as JSON when it can, so
``FLASK_CAPTCHA_TTL=300`` arrives as an int and ``FLASK_RATE_LIMIT_CREATE=30/60`` as a string.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEFAULTS: dict[str, Any] = {
    "STORE_URL": "",  # empty: a SQLite file in the instance folder (create_app fills it in)
    "CAPTCHA_TTL": 300,
    "CAPTCHA_LENGTH": 5,
    "CAPTCHA_ORACLE_SECRET": "",
    "RATE_LIMIT_CREATE": "30/60",
    "RATE_LIMIT_VERIFY": "30/60",
    "MAX_CONTENT_LENGTH": 16384,
    "EVENTS_INTERVAL": 1.0,
    "EVENTS_MAX_SECONDS": 30,
    "TRUSTED_PROXIES": 0,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_SECURE": False,
    # CPU seconds added to the lazy init, to stand for a costlier one (a model, a big cache):
    # demos, tests and benchmarks of the warm-up. 0: the init is the fonts and the store only.
    "LAZYINIT_EXTRA_SECONDS": 0,
    # Longest sleep of GET /debug/slow, a deliberately slow request (remote pdb tests and demos).
    # 0: the route does not exist. Never in production: it holds a worker as long as asked.
    "SLOW_ENDPOINT_MAX_SECONDS": 0,
}

# Secrets and URLs must stay the exact strings given: JSON parsing would turn "12345" into an int
# and "true" into a bool.
RAW_STRING_KEYS = ("SECRET_KEY", "CAPTCHA_ORACLE_SECRET", "STORE_URL")

STORE_SCHEMES = ("redis", "rediss", "unix", "sqlite")
MAX_ANSWER_LENGTH = 32  # the verify endpoint refuses longer answers


class ConfigError(ValueError):
    """One or more configuration values are invalid; the message names all of them."""


@dataclass(frozen=True)
class RateLimit:
    count: int
    seconds: int


@dataclass(frozen=True)
class Settings:
    store_url: str
    captcha_ttl: int
    captcha_length: int
    oracle_secret: str
    rate_limit_create: RateLimit
    rate_limit_verify: RateLimit
    events_interval: float
    events_max_seconds: float
    trusted_proxies: int
    max_content_length: int
    lazyinit_extra_seconds: float
    slow_endpoint_max_seconds: float


def raw_strings_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    return {key: environ[f"FLASK_{key}"] for key in RAW_STRING_KEYS if f"FLASK_{key}" in environ}


def load_settings(config: Mapping[str, Any]) -> Settings:
    """Check every value and report all the invalid ones at once."""
    errors: list[str] = []

    def check(key: str, parse: Any, *args: Any) -> Any:
        try:
            return parse(config[key], *args)
        except (TypeError, ValueError) as error:
            errors.append(f"{key}={config[key]!r}: {error}")
            return None

    settings = Settings(
        store_url=check("STORE_URL", _store_url),
        captcha_ttl=check("CAPTCHA_TTL", _int, 1),
        captcha_length=check("CAPTCHA_LENGTH", _int, 1, MAX_ANSWER_LENGTH),
        oracle_secret=check("CAPTCHA_ORACLE_SECRET", _str),
        rate_limit_create=check("RATE_LIMIT_CREATE", _rate_limit),
        rate_limit_verify=check("RATE_LIMIT_VERIFY", _rate_limit),
        events_interval=check("EVENTS_INTERVAL", _seconds),
        events_max_seconds=check("EVENTS_MAX_SECONDS", _seconds),
        trusted_proxies=check("TRUSTED_PROXIES", _int, 0),
        max_content_length=check("MAX_CONTENT_LENGTH", _int, 1),
        lazyinit_extra_seconds=check("LAZYINIT_EXTRA_SECONDS", _seconds_or_zero),
        slow_endpoint_max_seconds=check("SLOW_ENDPOINT_MAX_SECONDS", _seconds_or_zero),
    )
    check("SESSION_COOKIE_SAMESITE", _samesite)
    check("SESSION_COOKIE_SECURE", _bool)
    if config["SESSION_COOKIE_SAMESITE"] == "None" and config["SESSION_COOKIE_SECURE"] is False:
        # Browsers drop a SameSite=None cookie that is not also Secure.
        errors.append("SESSION_COOKIE_SAMESITE=None needs SESSION_COOKIE_SECURE=true")
    if errors:
        raise ConfigError("invalid configuration: " + "; ".join(errors))
    return settings


def _int(value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("expected an integer")
    number = int(value)  # a str that is no integer raises ValueError
    if number < low or (high is not None and number > high):
        raise ValueError(f"expected {low}..{high}" if high else f"expected an integer >= {low}")
    return number


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a number of seconds")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError("expected a number of seconds > 0")
    return number


def _seconds_or_zero(value: Any) -> float:
    return 0.0 if value in (0, "0") else _seconds(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _samesite(value: Any) -> None:
    if value not in ("Lax", "Strict", "None", None):
        raise ValueError("expected Lax, Strict or None")


def _bool(value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")


def _rate_limit(value: Any) -> RateLimit:
    count, sep, seconds = _str(value).partition("/")
    try:
        if not sep:
            raise ValueError
        return RateLimit(_int(count.strip(), 1), _int(seconds.strip(), 1))
    except ValueError:
        raise ValueError("expected COUNT/SECONDS with both > 0, e.g. 30/60") from None


def _store_url(value: Any) -> str:
    url = _str(value)
    parts = urlsplit(url)
    if parts.scheme not in STORE_SCHEMES:
        raise ValueError(f"the scheme must be one of {', '.join(STORE_SCHEMES)}")
    if parts.scheme == "sqlite":
        sqlite_path(url)
    return url


def sqlite_path(url: str) -> str:
    """``sqlite:////abs/path.db`` -> ``/abs/path.db``: three slashes, then an absolute path."""
    prefix = "sqlite:///"
    path = url[len(prefix) :] if url.startswith(prefix) else ""
    if not path.startswith("/") or path.endswith("/"):
        raise ValueError("expected sqlite:////absolute/path.db")
    return path
