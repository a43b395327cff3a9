"""The bundle's sample Flask app: a captcha service (see README.md for the API and settings).

Configuration comes from environment variables prefixed with ``FLASK_`` (the deploy writes them
into the app's env file), e.g. ``FLASK_SECRET_KEY``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from . import api, captchas, events, openapi, pages, slow
from .config import DEFAULTS, load_settings, raw_strings_from_env
from .errors import register_error_handlers
from .state import AppState
from .store import open_store
from .version import __version__

__all__ = ["__version__", "create_app"]


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then the environment, then ``config`` (tests) on top."""
    app = Flask(__name__)
    app.config.update(DEFAULTS)
    app.config.from_prefixed_env()
    app.config.update(raw_strings_from_env())
    if config:
        app.config.update(config)
    if not app.config.get("SECRET_KEY"):
        raise RuntimeError("FLASK_SECRET_KEY is not set: the deploy writes it into the env file")
    _log_to_stderr(app)
    app.session_interface = _LazySessions()
    if not app.config.get("STORE_URL"):
        app.config["STORE_URL"] = _default_store_url(app)
    settings = load_settings(app.config)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length

    if settings.oracle_secret:
        app.logger.warning("the captcha oracle is on: never in production (CAPTCHA_ORACLE_SECRET)")
    state = AppState(settings, open_store(settings.store_url))
    state.attach(app)
    register_error_handlers(app)
    for blueprint in (api.bp, events.bp, openapi.bp, pages.bp):
        app.register_blueprint(blueprint)
    if settings.slow_endpoint_max_seconds:
        app.logger.warning("GET /debug/slow is on: never in production (SLOW_ENDPOINT_MAX_SECONDS)")
        app.register_blueprint(slow.bp)
    app.after_request(_no_store)
    if settings.trusted_proxies:
        # nginx appends the peer address to X-Forwarded-For: trust that many last hops only.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)
    _register_lazy_init(state)
    return app


def _default_store_url(app: Flask) -> str:
    try:
        os.makedirs(app.instance_path, exist_ok=True)
    except OSError as error:
        # Not fatal: /healthz reports the store unavailable until the folder can be written.
        app.logger.warning("cannot create the instance folder for the SQLite store: %s", error)
    return "sqlite:///" + os.path.join(app.instance_path, "sample_app.db")


def _no_store(response: Response) -> Response:
    # Captchas are one-time: no cache (browser or proxy) may keep or replay a response.
    # Responses that chose their own policy keep it (static files, the event stream).
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"
    return response


class _LazySessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, minus building the signer for requests without a session
    cookie (every API request): about a tenth of the image endpoint's cost over bare Flask."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


def _register_lazy_init(state: AppState) -> None:
    # The toolkit is optional: without it, the first requests do this work themselves.
    try:
        from wsgiprobe import lazyinit
    except ImportError:
        return
    lazyinit.register("sample_app.renderer", captchas.ensure_ready)
    lazyinit.register("sample_app.store", state.store.ping)
    extra = state.settings.lazyinit_extra_seconds
    if extra:
        lazyinit.register("sample_app.extra", lambda: _burn_cpu(extra))


def _burn_cpu(seconds: float) -> None:
    # Busy, not asleep: a real init (loading a model, filling a cache) holds the CPU and the GIL.
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        sum(range(1000))


def _log_to_stderr(app: Flask) -> None:
    # The app server hands stderr to supervisor, which keeps and rotates the log.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    app.logger.handlers[:] = [handler]
    app.logger.setLevel(logging.INFO)
