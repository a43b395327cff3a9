"""How the toolkit wraps an app, from the environment the deploy writes (see entrypoint.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from wsgiprobe import workers
from wsgiprobe.appspec import WSGIApp, app_from_environment
from wsgiprobe.envvars import env_flag
from wsgiprobe.lazyinit_wsgi import LazyInitMiddleware
from wsgiprobe.pdbhook import PdbHookMiddleware
from wsgiprobe.pdbhook import settings_from_environment as pdb_settings_from_environment
from wsgiprobe.profiler import ProfilingMiddleware, settings_from_environment
from wsgiprobe.securecookies import SecureCookies
from wsgiprobe.streamlimit import StreamLimit

# Seconds a client refused by a full stream pool is told to wait: about the time streams take
# to end and free their slots at the sample app's pace.
STREAM_RETRY_AFTER = 5


def build_application(environ: Mapping[str, str] = os.environ) -> WSGIApp:
    if workers.worker_index() is not None:
        workers.die_with_parent()  # a worker of an app server: it ends with its master
    # Over HTTPS every cookie is Secure, whatever the app sets (one comparison per request).
    app = SecureCookies(app_from_environment(environ))
    streams = _positive_int(environ, "WSGIPROBE_STREAM_LIMIT", 0)
    if streams:
        # A stream pool's process: the app and its bound only. The debug surfaces, the warm-up
        # and the worker records are the request workers'; these workers are not numbered
        # among them.
        return StreamLimit(app, streams, STREAM_RETRY_AFTER)
    profiler = settings_from_environment(environ)
    if profiler is not None:
        app = ProfilingMiddleware(app, profiler)
    # The warm-up's requests are never profiled, and every other request pays one string
    # comparison for it.
    app = lazy = LazyInitMiddleware(
        app,
        state_dir=environ.get("WSGIPROBE_LAZYINIT_DIR") or None,
        max_concurrent=_positive_int(environ, "WSGIPROBE_LAZYINIT_CONCURRENCY", 1),
        release=release_of(environ),
    )
    if env_flag(environ, "WSGIPROBE_LAZYINIT_ON_LOAD"):
        # This worker takes no request before the app is loaded: a reloaded worker is warm
        # when it joins (when a slot is free; else the warm-up finishes the job).
        lazy.initialise_now()
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


def release_of(environ: Mapping[str, str]) -> str | None:
    """The release directory (under ``WSGIPROBE_RELEASES_DIR``) the app's module lies in. The
    deploy switches a ``current`` link between releases and reloads: called as the app is built,
    right after its import, this names the code the worker runs, and the middleware keeps it
    (a later call would follow the link to wherever it points then)."""
    root = environ.get("WSGIPROBE_RELEASES_DIR")
    module = sys.modules.get(environ.get("WSGIPROBE_APP", "").partition(":")[0])
    path = getattr(module, "__file__", None)
    if not root or not path:
        return None
    relative = os.path.relpath(os.path.realpath(path), os.path.realpath(root))
    return None if relative.startswith("..") else relative.split(os.sep)[0]
