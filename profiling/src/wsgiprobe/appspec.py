"""Find the real app from ``WSGIPROBE_APP``: ``module:name`` or ``module:factory(args)``.

The forms gunicorn and ``flask --app`` accept: a name in the module, or a call of an app
factory with literal arguments (``pkg:create_app()``, ``pkg:create_app("prod")``), made once.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

WSGIApp = Callable[..., Any]

FORMS = "'module:name' or 'module:factory()'"
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def parse(spec: str) -> tuple[str, str, tuple[Any, ...] | None, dict[str, Any]]:
    """(module, name, positional args or None when the name is not called, keyword args)."""
    module, sep, target = spec.partition(":")
    if not sep or not _MODULE.fullmatch(module):
        raise ValueError(f"WSGIPROBE_APP must look like {FORMS}, got {spec!r}")
    try:
        node = ast.parse(target.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"WSGIPROBE_APP must look like {FORMS}, got {spec!r}") from None
    if isinstance(node, ast.Name):
        return module, node.id, None, {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        try:
            args = tuple(ast.literal_eval(arg) for arg in node.args)
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        except ValueError:
            raise ValueError(
                f"WSGIPROBE_APP={spec!r}: a factory's arguments must be literals"
            ) from None
        if len(kwargs) != len(node.keywords):  # **mapping
            raise ValueError(f"WSGIPROBE_APP={spec!r}: a factory's arguments must be literals")
        return module, node.func.id, args, kwargs
    raise ValueError(f"WSGIPROBE_APP must look like {FORMS}, got {spec!r}")


def load_app(spec: str) -> WSGIApp:
    """Import the module and return the WSGI callable the spec names or its factory makes."""
    module_name, name, args, kwargs = parse(spec)
    found = getattr(importlib.import_module(module_name), name, None)
    if args is not None:
        if not callable(found):
            raise ValueError(f"WSGIPROBE_APP={spec!r}: {module_name}.{name} is not a factory")
        found = found(*args, **kwargs)
    elif inspect.isfunction(found) and not _takes_two_arguments(found):
        raise ValueError(
            f"WSGIPROBE_APP={spec!r} names a function that cannot take (environ, "
            f"start_response): an app factory? Call it: '{module_name}:{name}()'"
        )
    if not callable(found):
        raise ValueError(f"WSGIPROBE_APP={spec!r} does not name a WSGI callable")
    return found


def _takes_two_arguments(function: Callable[..., Any]) -> bool:
    try:
        inspect.signature(function).bind(None, None)
    except TypeError:
        return False
    return True


def app_from_environment(environ: Mapping[str, str] = os.environ) -> WSGIApp:
    spec = environ.get("WSGIPROBE_APP")
    if not spec:
        raise RuntimeError("WSGIPROBE_APP is not set: the deploy writes it into the app's env file")
    return load_app(spec)
