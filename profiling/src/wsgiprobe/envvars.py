"""Reading the toolkit's settings from environment variables the deploy writes.

A bad value raises ValueError naming the variable and what it got: a typo must not silently
turn a feature off or change a bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def env_flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    """On (1/true/yes/on) or off (0/false/no/off); unset or empty is the default; anything
    else is refused."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise invalid(env, name, "1/true or 0/false")


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid(env, name, "an integer") from None


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    """A finite number; NaN and infinities are refused."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise invalid(env, name, "a number") from None
    if not math.isfinite(value):
        raise invalid(env, name, "a finite number")
    return value


def invalid(env: Mapping[str, str], name: str, expected: str) -> ValueError:
    return ValueError(f"{name} must be {expected}, got {env.get(name)!r}")
