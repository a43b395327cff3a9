"""Reading the toolkit's settings from environment variables the deploy writes.

A bad value raises ValueError naming the variable and what it got: a typo must not silently
turn a feature off or change a bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# What each WSGIPROBE_* variable the toolkit reads means, in one place: several modules read some
# of them, and the code that reads them moves. tools/envref.py finds the reads and their
# defaults in the code and renders this beside them (profiling/README.md); its unit test fails
# on a variable read without a meaning here, or a meaning no code reads.
MEANINGS = {
    "WSGIPROBE_APP": "the real app, `module:name` or `module:factory(args)` (`app_wsgi_app`)",
    "WSGIPROBE_STREAM_LIMIT": (
        "above 0: this process is a stream pool's, serving the app alone with at most this many "
        "responses open (`app_streams_per_worker`)"
    ),
    "WSGIPROBE_RELEASES_DIR": (
        "the releases' parent directory: a worker reports the release its app was loaded from"
    ),
    "WSGIPROBE_WORKERS_FILE": (
        "gunicorn: where the hooks record the current workers (index, pid), for the warm-up "
        "and pdb to find them"
    ),
    "WSGIPROBE_UWSGI_STATS": (
        "uWSGI: its stats socket (path or host:port), where wsgiprobe.discovery finds the "
        "master and the workers (`uwsgi_stats_socket`)"
    ),
    "WSGIPROBE_LAZYINIT_DIR": (
        "the workers' lazyinit state files and init slots; unset: `/lazyinit?status` shows only "
        "the answering worker"
    ),
    "WSGIPROBE_LAZYINIT_CONCURRENCY": (
        "how many of the host's workers may run their inits at once (`warmup_concurrency`)"
    ),
    "WSGIPROBE_LAZYINIT_ON_LOAD": (
        "run the inits as a worker loads the app, before its first request (`warmup_on_load`)"
    ),
    "WSGIPROBE_PROFILER": "the profiler is on (`profiling_enabled`)",
    "WSGIPROBE_PROFILER_DIR": (
        "the profile directory, an absolute path; required with the profiler on (`profiling_dir`)"
    ),
    "WSGIPROBE_PROFILER_TOKEN": (
        "a request carrying it in the trigger header or cookie is profiled (`profiling_token`)"
    ),
    "WSGIPROBE_PROFILER_SAMPLE_RATE": (
        "the share (0 to 1) of other requests profiled at random (`profiling_sample_rate`)"
    ),
    "WSGIPROBE_PROFILER_MAX_PROFILES": (
        "profiles kept, the oldest removed first (`profiling_max_profiles`)"
    ),
    "WSGIPROBE_PROFILER_MAX_MB": "megabytes of profiles kept (`profiling_max_mb`)",
    "WSGIPROBE_PROFILER_SCRUB_HEADERS": (
        "comma-separated header names whose values a profile never keeps, besides the built-in "
        "ones (`profiling_scrub_headers`)"
    ),
    "WSGIPROBE_PROFILER_KEEP_HEADERS": (
        "comma-separated header names whose values a profile keeps; set and empty: none "
        "(`profiling_keep_headers`)"
    ),
    "WSGIPROBE_PROFILER_REDACT_QUERY": (
        "a profile keeps a query string's keys, not its values (`profiling_redact_query`)"
    ),
    "WSGIPROBE_PROFILER_PATH": "where the profiler's pages are served",
    "WSGIPROBE_PDB": "1 or true: SIGUSR1 opens a pdb session in the worker (`pdb_enabled`)",
    "WSGIPROBE_PDB_HOST": "the IP address a worker's pdb session listens on (`pdb_host`)",
    "WSGIPROBE_PDB_BASE_PORT": "worker N listens on this port + N (`pdb_base_port`)",
    "WSGIPROBE_PDB_TIMEOUT": (
        "seconds a worker waits for a pdb client before it goes on serving (`pdb_timeout`)"
    ),
    "WSGIPROBE_PDB_IDLE_TIMEOUT": (
        "seconds a silent pdb client stays attached (`pdb_idle_timeout`)"
    ),
    "WSGIPROBE_PDB_DIR": (
        "the session records (`pdb-worker-N.json`) and gunicorn's log-rotation marker; unset: "
        "no records, the marker in a temporary directory (`pdb_dir`)"
    ),
    "WSGIPROBE_PDB_SECRET": (
        "a pdb client's first line must be this; at least 16 printable characters, required "
        "with pdb on (`pdb_secret`)"
    ),
}

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
