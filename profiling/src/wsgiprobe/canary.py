"""Check a release before it takes traffic: ``python -m wsgiprobe.canary [--path /healthz]``.

Run with the new release's Python and the app's environment, it loads the app named by
``WSGIPROBE_APP`` from that release, runs its lazy inits (``wsgiprobe.lazyinit``) and sends one
GET to ``--path`` in-process. Exit 0 when the answer is 200; 1 when the app fails to import, an
init raises or the answer is another status (said on stderr, with the start of the body); 2 on
bad usage. A Flask app whose loaded ``secret_key`` is empty or a known placeholder (``dev``,
``changeme``...) fails too, unless ``--allow-weak-secret-key``: the generated key reaches an app
that reads it (``FLASK_SECRET_KEY``, for ``app.config.from_prefixed_env()``), and an app that
does not would otherwise sign its sessions with a key anyone knows.

The deploy runs it before it points ``current`` at the release, so that a release whose health
check fails never serves a request.

Only the app itself is loaded, not the toolkit around it: the canary is no worker and must
leave no worker state behind (lazyinit records, profiles, pdb ports).
"""

from __future__ import annotations

import argparse
import io
import sys
import traceback
from typing import Any
from wsgiref.util import setup_testing_defaults

from wsgiprobe import lazyinit
from wsgiprobe.appspec import app_from_environment

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
BODY_SHOWN = 300
# Keys from tutorials and templates (Flask's tutorial: "dev"), compared without case.
PLACEHOLDER_KEYS = frozenset(
    {"", "dev", "development", "changeme", "change-me", "change_me", "secret", "secret-key",
     "secret_key", "secretkey", "your-secret-key", "your_secret_key", "replace-me", "test",
     "default", "key", "none", "null", "xxx"}
)  # fmt: skip


def get(app: Any, path: str) -> tuple[str, bytes]:
    """One in-process GET: the status line and the body."""
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": ""}
    setup_testing_defaults(environ)
    environ["wsgi.errors"] = sys.stderr
    environ["wsgi.input"] = io.BytesIO(b"")
    status: list[str] = []

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status[:] = [line]
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return (status[0] if status else "no status"), body


def weak_secret_key(app: Any) -> str | None:
    """Why a Flask app's secret key is no secret, or None (a good key, or no Flask app)."""
    if not hasattr(app, "secret_key"):
        return None
    key = app.secret_key
    if not key:
        return "its secret_key is empty"
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
    if text.strip().lower() in PLACEHOLDER_KEYS:
        return f"its secret_key is the placeholder {text!r}"
    return None


def check(path: str, allow_weak_secret_key: bool = False) -> tuple[bool, str]:
    """Whether the app loads, initialises and answers 200 at ``path``; what happened."""
    try:
        app = app_from_environment()
        weak = None if allow_weak_secret_key else weak_secret_key(app)
        if weak is not None:
            return False, (
                f"the app loaded, but {weak}: read the generated key from FLASK_SECRET_KEY "
                "(app.config.from_prefixed_env()) or set SECRET_KEY another way "
                "(or set app_secret_key_check: false)"
            )
        ran = lazyinit.run_pending()
        status, body = get(app, path)
    except (Exception, SystemExit):  # an app exiting as it loads did not load: no exit of ours
        return False, "the app failed:\n" + traceback.format_exc()
    snippet = body[:BODY_SHOWN].decode("utf-8", "replace")
    inits = ", ".join(ran) or "none"
    if not status.startswith("200"):
        return False, f"GET {path} answered {status}: {snippet}"
    return True, f"GET {path} answered {status} (inits run: {inits})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wsgiprobe.canary",
        description="Load the app in-process and check that a GET answers 200.",
    )
    parser.add_argument("--path", default="/healthz", help="the path to GET (default /healthz)")
    parser.add_argument(
        "--allow-weak-secret-key", action="store_true",
        help="do not refuse a Flask app whose secret_key is empty or a placeholder",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not args.path.startswith("/"):
        parser.error(f"--path must start with /, got {args.path!r}")
    ok, message = check(args.path, args.allow_weak_secret_key)
    print(f"canary: {message}", file=sys.stderr if not ok else sys.stdout, flush=True)
    return EXIT_OK if ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
