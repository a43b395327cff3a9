"""The profiler's settings, read from the environment variables Ansible writes into the env file."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from wsgiprobe.envvars import env_flag, env_float, env_int, invalid

from .scrub import Scrubber, environ_key

TRIGGER_HEADER = "X-Wsgiprobe-Profile"
TRIGGER_COOKIE = "wsgiprobe_profile"
DEFAULT_PATH = "/_profiler"  # Dozer's own links point there: keep it the default
# Their values are never saved with a profile, whatever the settings say (credential-looking
# names are redacted too: see scrub.py).
ALWAYS_SCRUBBED = ("Cookie", "Authorization", "Proxy-Authorization", TRIGGER_HEADER)
# The headers whose values a profile keeps unless configured otherwise: what tells requests
# apart without identifying anyone. Not Referer (a URL, often with a token in its query), nor
# X-Forwarded-For (addresses).
DEFAULT_KEEP_HEADERS = (
    "Host",
    "User-Agent",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Content-Type",
    "Content-Length",
)

# RFC 9110 token characters: anything else cannot be a header name.
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
# Safe in a header and in a cookie value without quoting (base64, hex, generated passwords).
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+")
_UI_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)+")


@dataclass(frozen=True, slots=True)
class ProfilerSettings:
    """What ProfilingMiddleware needs; validated on construction."""

    directory: Path
    # repr=False: the trigger token must not end up in a log line that prints the settings.
    token: str = field(default="", repr=False)
    sample_rate: float = 0.0
    max_profiles: int = 200
    max_mb: float = 50.0
    scrub_headers: tuple[str, ...] = ()  # extra header names, besides ALWAYS_SCRUBBED
    keep_headers: tuple[str, ...] = DEFAULT_KEEP_HEADERS  # the allowlist; scrubbing wins
    redact_query: bool = True
    path: str = DEFAULT_PATH

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", Path(self.directory))
        if not self.directory.is_absolute():
            raise ValueError(f"profile directory must be an absolute path, got {self.directory!r}")
        if self.token and not _TOKEN.fullmatch(self.token):
            raise ValueError("trigger token may hold only letters, digits and ._~+/=-")
        if not (math.isfinite(self.sample_rate) and 0.0 <= self.sample_rate <= 1.0):
            raise ValueError(f"sample rate must be from 0 to 1, got {self.sample_rate!r}")
        if isinstance(self.max_profiles, bool) or self.max_profiles < 1:
            raise ValueError(f"max profiles must be an integer >= 1, got {self.max_profiles!r}")
        if not (math.isfinite(self.max_mb) and self.max_mb > 0):
            raise ValueError(f"max MB must be a number > 0, got {self.max_mb!r}")
        for name in (*self.scrub_headers, *self.keep_headers):
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"not a header name: {name!r}")
        if not _UI_PATH.fullmatch(self.path):
            raise ValueError(f"UI path must look like /_profiler (no trailing /): {self.path!r}")

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1024 * 1024)  # MB here means MiB

    def scrubber(self) -> Scrubber:
        return Scrubber(
            self.keep_headers, (*ALWAYS_SCRUBBED, *self.scrub_headers), self.redact_query
        )

    def ignored_keep_headers(self) -> tuple[str, ...]:
        """Allowlisted names whose values are redacted all the same (scrubbed or credentials):
        the ones the scrubber does not keep."""
        kept = self.scrubber().kept
        return tuple(name for name in self.keep_headers if environ_key(name) not in kept)


def settings_from_environment(env: Mapping[str, str]) -> ProfilerSettings | None:
    """ProfilerSettings from WSGIPROBE_PROFILER_* variables, or None when the profiler is off.

    A bad value raises ValueError naming the variable and the value (never the token's value),
    so that the app server refuses to start with a clear message. Empty optional variables
    mean their default (an env file may write ``NAME=``).
    """
    if not env_flag(env, "WSGIPROBE_PROFILER"):
        return None
    directory = env.get("WSGIPROBE_PROFILER_DIR", "").strip()
    if not directory:
        raise ValueError("WSGIPROBE_PROFILER_DIR is required when WSGIPROBE_PROFILER is on")
    if not Path(directory).is_absolute():
        raise ValueError(f"WSGIPROBE_PROFILER_DIR must be an absolute path, got {directory!r}")

    token = env.get("WSGIPROBE_PROFILER_TOKEN", "").strip()
    if token and not _TOKEN.fullmatch(token):
        # The value is a secret: name the variable only.
        raise ValueError(
            "WSGIPROBE_PROFILER_TOKEN may hold only letters, digits and ._~+/=- (value not shown)"
        )

    sample_rate = env_float(env, "WSGIPROBE_PROFILER_SAMPLE_RATE", 0.0)
    if not 0.0 <= sample_rate <= 1.0:
        raise invalid(env, "WSGIPROBE_PROFILER_SAMPLE_RATE", "a number from 0 to 1")
    max_profiles = env_int(env, "WSGIPROBE_PROFILER_MAX_PROFILES", 200)
    if max_profiles < 1:
        raise invalid(env, "WSGIPROBE_PROFILER_MAX_PROFILES", "an integer >= 1")
    max_mb = env_float(env, "WSGIPROBE_PROFILER_MAX_MB", 50.0)
    if max_mb <= 0:
        raise invalid(env, "WSGIPROBE_PROFILER_MAX_MB", "a number > 0")

    scrub_headers = _header_names(env, "WSGIPROBE_PROFILER_SCRUB_HEADERS")
    # Unset means the default allowlist; set and empty means keep no header's value (reading
    # it as "the default" would keep more than was asked for).
    keep_headers = (
        _header_names(env, "WSGIPROBE_PROFILER_KEEP_HEADERS")
        if "WSGIPROBE_PROFILER_KEEP_HEADERS" in env
        else DEFAULT_KEEP_HEADERS
    )
    redact_query = env_flag(env, "WSGIPROBE_PROFILER_REDACT_QUERY", default=True)

    path = env.get("WSGIPROBE_PROFILER_PATH", "").strip() or DEFAULT_PATH
    if not _UI_PATH.fullmatch(path):
        raise invalid(env, "WSGIPROBE_PROFILER_PATH", "a path like /_profiler (no trailing /)")

    return ProfilerSettings(
        directory=Path(directory),
        token=token,
        sample_rate=sample_rate,
        max_profiles=max_profiles,
        max_mb=max_mb,
        scrub_headers=scrub_headers,
        keep_headers=keep_headers,
        redact_query=redact_query,
        path=path,
    )


def _header_names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of header names; blanks between commas are ignored."""
    raw = env.get(name, "")
    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    for header in names:
        if not _HEADER_NAME.fullmatch(header):
            raise ValueError(
                f"{name} must be comma-separated header names, got {raw!r} ({header!r} is not one)"
            )
    return names
