"""Find the real app from ``WSGIPROBE_APP`` (``module:attribute``)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from typing import Any

WSGIApp = Callable[..., Any]


def load_app(spec: str) -> WSGIApp:
    """Import ``module:attribute`` and return the WSGI callable it names."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"WSGIPROBE_APP must look like 'module:attribute', got {spec!r}")
    app = getattr(importlib.import_module(module_name), attribute, None)
    if not callable(app):
        raise ValueError(f"WSGIPROBE_APP={spec!r} does not name a WSGI callable")
    return app


def app_from_environment(environ: Mapping[str, str] = os.environ) -> WSGIApp:
    spec = environ.get("WSGIPROBE_APP")
    if not spec:
        raise RuntimeError("WSGIPROBE_APP is not set: the deploy writes it into the app's env file")
    return load_app(spec)
