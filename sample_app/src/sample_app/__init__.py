"""The bundle's sample Flask app.

Configuration comes from environment variables prefixed with ``FLASK_`` (the deploy writes them
into the app's env file), e.g. ``FLASK_SECRET_KEY``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from flask import Flask, jsonify, render_template

__version__ = "0.1.0"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app: environment first, then ``config`` (tests) on top."""
    app = Flask(__name__)
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)
    if not app.config.get("SECRET_KEY"):
        raise RuntimeError("FLASK_SECRET_KEY is not set: the deploy writes it into the env file")
    _log_to_stderr(app)

    @app.get("/")
    def index() -> str:
        return render_template("index.html", version=__version__, pid=os.getpid())

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok", version=__version__)

    return app


def _log_to_stderr(app: Flask) -> None:
    # The app server hands stderr to supervisor, which keeps and rotates the log.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    app.logger.handlers[:] = [handler]
    app.logger.setLevel(logging.INFO)
