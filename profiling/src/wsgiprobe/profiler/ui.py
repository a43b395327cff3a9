"""The /_profiler/ pages: Dozer's profiler UI, made safe to leave on.

Dozer's own dispatch (``Profiler.__call__`` -> ``profiler()`` -> exposed methods) and its media
are used as they are; ``showall``, ``show`` and ``delete`` are replaced so that the listing
reads small JSON records instead of unpickling every profile, a profile pruned meanwhile is a
404 instead of a 500, deletes are POST-only and same-origin, and the pages show which worker
served the request.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from dozer.profile import Profiler
from mako.lookup import TemplateLookup
from webob import Request, Response

from . import templates
from .settings import ProfilerSettings
from .storage import PROFILE_ID, ProfileInfo, ProfileStore, UnsafeDirectoryError

logger = logging.getLogger("wsgiprobe.profiler")

StartResponse = Callable[..., Any]
_BASE_KEY = "wsgiprobe.profiler.base"
# Dozer's dispatch pops this segment first, whatever the configured UI path is.
_DOZER_PREFIX = "/_profiler"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SECURITY_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Frame-Options", "DENY"),  # the delete buttons must not be clickjacked
    ("X-Content-Type-Options", "nosniff"),
    # Its own, which nginx keeps: Dozer's pages use inline handlers and styles.
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline';"
        " img-src 'self' data:; object-src 'none'; base-uri 'self'; frame-ancestors 'none'",
    ),
]


class ProfilerUI(Profiler):
    def __init__(self, store: ProfileStore, settings: ProfilerSettings) -> None:
        super().__init__(None, profile_path=str(store.directory))
        self.store = store
        self.settings = settings
        self.mako = TemplateLookup(default_filters=["str", "h"])
        self.mako.put_string("/layout.mako", templates.LAYOUT)
        self.mako.put_string("/list_profiles.mako", templates.LIST_PROFILES)
        self.mako.put_string("/show_profile.mako", templates.SHOW_PROFILE)

    def serve(self, environ: dict[str, Any], start_response: StartResponse, rest: str) -> Any:
        """Answer a request for the UI path; rest is PATH_INFO after it ("", "/", "/show/x")."""
        method = environ.get("REQUEST_METHOD", "GET")
        page = rest.lstrip("/").split("/", 1)[0]
        if page == "delete":
            # Dozer deletes on GET: a link, a prefetch or an <img> elsewhere could wipe profiles.
            if method != "POST":
                return _json_error(start_response, "405 Method Not Allowed", "POST", "delete")
            if not same_origin(environ):
                return _json_error(start_response, "403 Forbidden", None, "origin")
        elif method != "GET":
            return _json_error(start_response, "405 Method Not Allowed", "GET", "read")

        # Dozer's code sees a copy: wsgi.multiprocess False (it asserts that), and its fixed
        # /_profiler prefix in front of the rest of the path.
        dozer_environ = dict(environ)
        dozer_environ["wsgi.multiprocess"] = False
        dozer_environ["PATH_INFO"] = _DOZER_PREFIX + rest
        dozer_environ[_BASE_KEY] = environ.get("SCRIPT_NAME", "") + self.settings.path

        def secured_start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            return start_response(status, [*headers, *_SECURITY_HEADERS], *exc)

        return Profiler.__call__(self, dozer_environ, secured_start_response)

    # -- pages (Dozer's dispatch calls these by name; "exposed" lets it) ----------------------

    def showall(self, req: Request) -> Response:
        profiles, errors = self.store.list_profiles()
        now = time.time()
        return self._page(
            "/list_profiles.mako",
            req,
            rows=[_row(info, now) for info in profiles],
            errors=[(_age(now - mtime), error, pid) for mtime, error, pid in errors],
            max_profiles=self.settings.max_profiles,
            max_mb=f"{self.settings.max_mb:g}",
        )

    showall.exposed = True  # type: ignore[attr-defined]

    def show(self, req: Request) -> Response:
        profile_id = req.path_info_pop() or ""
        try:
            data = self.store.load(profile_id)
        except FileNotFoundError:
            # Pruned or deleted since the listing was shown: normal under load.
            return _text(404, f"profile {profile_id!r} is gone (pruned or deleted)")
        except UnsafeDirectoryError as exc:
            return _text(403, str(exc))
        except Exception as exc:  # a damaged file must not take the page down with a traceback
            logger.warning("profile %s unreadable: %s", profile_id, type(exc).__name__)
            return _text(500, f"profile {profile_id!r} is unreadable: {type(exc).__name__}")
        tree = data["profile"]
        record = data.get("wsgiprobe") or {}
        return self._page(
            "/show_profile.mako",
            req,
            id=profile_id,
            request_rows=_context(record, data.get("time")),
            environ=data.get("environ") or {},
            profile=sorted(
                (node for node in tree.values() if not node.get("callers")),
                key=lambda node: float(node["cost"]),
                reverse=True,
            ),
            profile_data=tree,
            ids=itertools.count(),
        )

    show.exposed = True  # type: ignore[attr-defined]

    def delete(self, req: Request) -> Response:
        # Only reached for a same-origin POST (see serve).
        profile_id = req.path_info_pop()
        if profile_id is not None and not PROFILE_ID.fullmatch(profile_id):
            return _text(404, "no such profile")
        self.store.delete(profile_id)
        response = Response(status=303)
        response.location = req.environ[_BASE_KEY] + "/showall"
        return response

    delete.exposed = True  # type: ignore[attr-defined]

    def _page(self, name: str, req: Request, **values: Any) -> Response:
        body = self.render(name, base=req.environ[_BASE_KEY], **values)
        return Response(body=body, content_type="text/html", charset="utf-8")


def same_origin(environ: dict[str, Any]) -> bool:
    """Does Origin (or, without one, Referer) name the host the request was sent to?

    A Host without a port matches any port: nginx's ``proxy_set_header Host $host`` drops the
    port that an SSH tunnel's Origin (http://127.0.0.1:8081) still carries.
    """
    source = environ.get("HTTP_ORIGIN") or environ.get("HTTP_REFERER")
    if not source or source == "null":
        return False
    try:
        origin = urlsplit(source)
        origin_port = origin.port or _DEFAULT_PORTS.get(origin.scheme)
        host = urlsplit("//" + _request_host(environ))
        host_port = host.port
    except ValueError:
        return False
    if not origin.hostname or origin.hostname != host.hostname:
        return False
    return host_port is None or host_port == origin_port


def _request_host(environ: dict[str, Any]) -> str:
    host = environ.get("HTTP_HOST")
    if host:
        return host
    return f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}".rstrip(":")


def _row(info: ProfileInfo, now: float) -> dict[str, str]:
    url = info.get("path", "")
    if info.get("query"):
        url += "?" + info.get("query")
    return {
        "id": info.id,
        "method": str(info.get("method", "?")),
        "url": url or "(no record)",
        "status": _or_dash(info.get("status")),
        "duration": _ms(info.get("duration_ms")),
        "cost": _ms(info.get("cost_ms")),
        "worker": _or_dash(info.get("worker")),
        "pid": _or_dash(info.get("pid")),
        "age": _age(now - info.mtime),
        "saved_at": datetime.fromtimestamp(info.mtime).isoformat(sep=" ", timespec="seconds"),
    }


def _context(record: dict[str, Any], saved: Any) -> list[tuple[str, str]]:
    url = record.get("path", "")
    if record.get("query"):
        url += "?" + record["query"]
    rows = [
        ("Worker", _or_dash(record.get("worker"))),
        ("Server", _or_dash(record.get("server"))),
        ("PID", _or_dash(record.get("pid"))),
        ("Thread", _or_dash(record.get("thread"))),
        ("Method", _or_dash(record.get("method"))),
        ("URL", url or "-"),
        ("Status", _or_dash(record.get("status"))),
        ("Duration", _ms(record.get("duration_ms"))),
        ("Profiled", _ms(record.get("cost_ms"))),
        ("Saved", saved.isoformat(sep=" ", timespec="seconds") if saved else "-"),
    ]
    if record.get("error"):
        rows.append(("Error", str(record["error"])))
    return rows


def _or_dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _ms(value: object) -> str:
    return f"{value:.1f} ms" if isinstance(value, int | float) else "-"


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _text(status: int, message: str) -> Response:
    return Response(
        body=message.encode(), status=status, content_type="text/plain", charset="utf-8"
    )


_MESSAGES = {
    "delete": "deleting profiles needs POST (from the profiler's own page)",
    "read": "the profiler's pages answer GET only",
    "origin": "delete refused: Origin/Referer does not match this host",
}


def _json_error(
    start_response: StartResponse, status: str, allow: str | None, reason: str
) -> Iterable[bytes]:
    error = "forbidden" if status.startswith("403") else "method_not_allowed"
    body = json.dumps({"error": error, "message": _MESSAGES[reason]}).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if allow:
        headers.append(("Allow", allow))
    start_response(status, headers + _SECURITY_HEADERS)
    return [body]
