"""What a profile may keep of a request: an allowlist, not a denylist.

A denylist misses every credential nobody thought of (``X-Api-Key``, ``X-Amz-Security-Token``,
an app's own ``X-Foo-Secret``). So a header's value is kept only when its name is on the
allowlist (``ProfilerSettings.keep_headers``), is not scrubbed by name and does not look like a
credential; every other header keeps its name with the value ``[redacted]``. The name stays
because knowing that a request carried ``Authorization`` or ``X-Forwarded-For`` helps explain
its profile, and a header's name is not the secret: its value is.

The query string keeps its keys and loses its values (``?token=abc&q=x`` is saved as
``token=[redacted]&q=[redacted]``) unless ``redact_query`` is off. A bare word without ``=``
(``?status``) is a key and stays.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[redacted]"

# Parts of a header name that say its value is a credential; matched anywhere in the name, any
# case. Over-matching costs a redacted value; missing one leaks a secret.
_CREDENTIAL = re.compile(
    r"AUTH|TOKEN|KEY|SECRET|PASS|PWD|COOKIE|SESSION|SIGN|CSRF|XSRF|CREDENTIAL|API|JWT|BEARER"
    r"|PRIVATE|OTP",
    re.IGNORECASE,
)
# WSGI carries these two headers without the HTTP_ prefix.
_UNPREFIXED = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH"})
# Request facts saved besides the headers. SCRIPT_NAME, PATH_INFO and QUERY_STRING are always
# present: Dozer's own templates index them. REQUEST_URI (uWSGI) and RAW_URI (gunicorn) are
# left out: they repeat the path and the query, unredacted.
_FACTS = frozenset(
    {
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
    }
)


def environ_key(header: str) -> str:
    """The WSGI environ key of a header name: ``X-Api-Key`` -> ``HTTP_X_API_KEY``."""
    key = header.upper().replace("-", "_")
    return key if key in _UNPREFIXED else "HTTP_" + key


def looks_like_credential(name: str) -> bool:
    """Whether a header name (or its environ key) suggests its value is a secret."""
    return _CREDENTIAL.search(name) is not None


def redact_query(query: str) -> str:
    """Every value replaced by ``[redacted]``, keys and empty values kept."""
    parts = []
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        parts.append(f"{key}={REDACTED}" if sep and value else part)
    return "&".join(parts)


class Scrubber:
    """Builds the environ and query a profile stores, from the scrubbing settings."""

    def __init__(
        self, keep_headers: Iterable[str], scrub_headers: Iterable[str], redact_query: bool
    ) -> None:
        scrubbed = {environ_key(name) for name in scrub_headers}
        self.kept = frozenset(
            key
            for key in map(environ_key, keep_headers)
            if key not in scrubbed and not looks_like_credential(key)
        )
        self.redacts_query = redact_query

    def query(self, query: str) -> str:
        return redact_query(query) if self.redacts_query else query

    def environ(self, environ: Mapping[str, Any]) -> dict[str, str]:
        """The part of environ a profile keeps: no secrets, no wsgi.* objects."""
        safe = {}
        for key, value in environ.items():
            if not isinstance(value, str):
                continue
            if key.startswith("HTTP_") or key in _UNPREFIXED:
                safe[key] = value if key in self.kept else REDACTED
            elif key in _FACTS:
                safe[key] = value
        for key in ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING"):
            safe.setdefault(key, "")
        safe["QUERY_STRING"] = self.query(safe["QUERY_STRING"])
        return safe
