"""``Secure`` on every cookie the app sets over HTTPS, whatever the app's own settings.

Behind nginx's TLS an app sees the https scheme (uWSGI's HTTPS variable, gunicorn's trusted
X-Forwarded-Proto) but its cookie settings are its own: Flask's session cookie is not Secure
unless the app says so. A browser sends a Secure cookie over HTTPS only, so a session cannot leak
through a plain HTTP request. Plain HTTP responses (this host's own tools) are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wsgiprobe.appspec import WSGIApp


class SecureCookies:
    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("wsgi.url_scheme") != "https":
            return self.app(environ, start_response)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers = [
                (name, secure(value) if name.lower() == "set-cookie" else value)
                for name, value in headers
            ]
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def secure(set_cookie: str) -> str:
    """The Set-Cookie value with the Secure attribute, added unless it is there."""
    attributes = (part.strip().lower() for part in set_cookie.split(";")[1:])
    return set_cookie if "secure" in attributes else f"{set_cookie}; Secure"
