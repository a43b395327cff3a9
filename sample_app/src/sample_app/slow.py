"""``GET /debug/slow?seconds=N``: a deliberately slow request, for tests and demos of the
toolkit's remote pdb (a worker to interrupt mid-request) and of the app server's timeouts.

Registered only when ``SLOW_ENDPOINT_MAX_SECONDS`` > 0 (default 0: the route does not exist,
404): a request that holds a worker for as long as the client asks is a denial of service in
production.
"""

from __future__ import annotations

import math
import os
import time

from flask import Blueprint, Response, jsonify, request

from .state import current

bp = Blueprint("slow", __name__)


@bp.get("/debug/slow")
def slow() -> Response:
    # Plain locals, so that a debugger stopped in this frame has something to print.
    path = request.path
    limit = current().settings.slow_endpoint_max_seconds
    asked = request.args.get("seconds", default=1.0, type=float)
    seconds = min(max(asked, 0.0), limit) if math.isfinite(asked) else 0.0
    started = time.monotonic()
    # One sleep: a signal handler (SIGUSR1 -> pdb) runs in this frame, then the sleep goes on
    # for the time left (PEP 475).
    time.sleep(seconds)
    # The request's absolute URL as the app builds it: its scheme is the one the app server
    # says the client used (https behind nginx's TLS).
    return jsonify(path=path, url=request.url, pid=os.getpid(), seconds=seconds,
                   elapsed=round(time.monotonic() - started, 3))  # fmt: skip
