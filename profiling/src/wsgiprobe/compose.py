"""How the toolkit wraps an app, from the environment the deploy writes (see entrypoint.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from wsgiprobe.appspec import WSGIApp, app_from_environment
from wsgiprobe.lazyinit_wsgi import LazyInitMiddleware
from wsgiprobe.pdbhook import PdbHookMiddleware
from wsgiprobe.pdbhook import settings_from_environment as pdb_settings_from_environment
from wsgiprobe.profiler import ProfilingMiddleware, settings_from_environment


def build_application(environ: Mapping[str, str] = os.environ) -> WSGIApp:
    app = app_from_environment(environ)
    profiler = settings_from_environment(environ)
    if profiler is not None:
        app = ProfilingMiddleware(app, profiler)
    # The warm-up's requests are never profiled, and every other request pays one string
    # comparison for it.
    app = LazyInitMiddleware(
        app,
        state_dir=environ.get("WSGIPROBE_LAZYINIT_DIR") or None,
        max_concurrent=_positive_int(environ, "WSGIPROBE_LAZYINIT_CONCURRENCY", 1),
    )
    pdb = pdb_settings_from_environment(environ)
    if pdb is not None:
        # Outermost, so that a worker's first request of any kind (the warm-up's /lazyinit
        # included) installs the SIGUSR1 handler; uWSGI replaces one set any earlier. Under
        # gunicorn the post_worker_init hook installed it already and this is a no-op.
        app = PdbHookMiddleware(app, pdb)
    return app


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {raw!r}")
    return int(raw)
