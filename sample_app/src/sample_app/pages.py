"""The web page and the health check."""

from __future__ import annotations

import os
import socket

from flask import Blueprint, Response, jsonify, render_template

from .state import current
from .store import StoreUnavailable
from .version import __version__

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str:
    return render_template("index.html", version=__version__, pid=os.getpid())


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    # Cheap enough for a load balancer to poll: one round trip to the store. `host` names the
    # app host that answered, behind a load balancer too.
    host = socket.gethostname()
    try:
        current().store.ping()
    except StoreUnavailable:
        return jsonify(status="degraded", store="unavailable", version=__version__, host=host), 503
    return jsonify(status="ok", store="ok", version=__version__, host=host), 200
