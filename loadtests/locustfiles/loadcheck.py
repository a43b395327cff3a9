"""Pure parts of the load tests: request names, the thresholds file and its verdict.

No locust import here: the unit tests use this module in a plain Python process (importing
locust monkey-patches the standard library with gevent).
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Exit codes of a run: locust's own (0 ok, 1 errors, 2 unhandled exception) plus ours.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_THRESHOLDS = 3

# Ids are 22 URL-safe base64 characters, but any segment there is an id: a malformed one is
# a test of its own and must not open a stats row per request either.
_ID_SEGMENT = re.compile(r"^(/api/captchas/)[^/]+(?=/|$)")


def group_name(url: str, case: str = "") -> str:
    """The stats name of a request: ids replaced by [id], query dropped, optional [case]."""
    path = urlsplit(url).path or "/"
    name = _ID_SEGMENT.sub(r"\1[id]", path)
    return f"{name} [{case}]" if case else name


# --- thresholds ------------------------------------------------------------------------------

_RUN_NUMBERS = {"max_failure_ratio": (0.0, 1.0), "min_requests_per_s": (0.0, math.inf)}


class ThresholdsError(ValueError):
    """The thresholds file is missing, not TOML, or has an unknown key or a bad value."""


@dataclass(frozen=True)
class Thresholds:
    source: str
    scenario: str
    max_failure_ratio: float | None = None
    min_requests_per_s: float | None = None
    p95_ms: dict[str, float] = field(default_factory=dict)


def _number(where: str, value: Any, *, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ThresholdsError(f"{where}: expected a number, got {value!r}")
    if not low <= value <= high:
        raise ThresholdsError(f"{where}: {value} is outside [{low}, {high}]")
    return float(value)


def _checked(
    where: str, table: Any, numbers: dict[str, tuple[float, float]], name_tables: set[str]
) -> dict[str, Any]:
    """Both gates' tables: only known keys; each number within its bounds; each name table
    (request name = milliseconds) of numbers >= 0."""
    if not isinstance(table, dict):
        raise ThresholdsError(f"{where}: expected a table")
    known = set(numbers) | name_tables
    unknown = set(table) - known
    if unknown:
        raise ThresholdsError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    out: dict[str, Any] = {
        key: _number(f"{where}.{key}", table[key], low=low, high=high)
        for key, (low, high) in numbers.items()
        if key in table
    }
    for key in sorted(name_tables & set(table)):
        limits = table[key]
        if not isinstance(limits, dict):
            raise ThresholdsError(f"{where}.{key}: expected a table of name = milliseconds")
        out[key] = {
            name: _number(f"{where}.{key}.{name!r}", limit, low=0.0)
            for name, limit in limits.items()
        }
    return out


def _check_table(where: str, table: Any) -> dict[str, Any]:
    return _checked(where, table, _RUN_NUMBERS, {"p95_ms"})


def parse_thresholds(text: str, scenario: str, source: str = "<string>") -> Thresholds:
    """[default] applies to every scenario; [scenario.NAME] overrides it key by key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ThresholdsError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(data) - {"default", "scenario", "open"}
    if unknown:
        raise ThresholdsError(f"{source}: unknown top-level key(s) {sorted(unknown)}")
    # The open-model gate's tables (openload.py) are checked here too: one file, one typo rule.
    _open_tables(source, data.get("open", {}))
    merged = _check_table(f"{source}: [default]", data.get("default", {}))
    scenarios = data.get("scenario", {})
    if not isinstance(scenarios, dict):
        raise ThresholdsError(f"{source}: [scenario] must hold [scenario.NAME] tables")
    # Every scenario table is checked, not only the one in use: a typo fails every run.
    checked = {
        name: _check_table(f"{source}: [scenario.{name}]", table)
        for name, table in scenarios.items()
    }
    own = checked.get(scenario, {})
    p95 = {**merged.get("p95_ms", {}), **own.get("p95_ms", {})}
    merged.update(own)
    merged["p95_ms"] = p95
    return Thresholds(source=source, scenario=scenario, **merged)


def load_thresholds(path: str | Path, scenario: str) -> Thresholds:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ThresholdsError(f"thresholds file {path}: {exc.strerror}") from None
    return parse_thresholds(text, scenario, source=str(path))


# --- the open-model gate's thresholds (openload.py) -----------------------------------------

# The percentiles openload.py reports, as (key in the thresholds file, label, percent).
OPEN_PERCENTILES = (
    ("p50_ms", "p50", 50.0),
    ("p90_ms", "p90", 90.0),
    ("p99_ms", "p99", 99.0),
    ("p999_ms", "p99.9", 99.9),
    ("max_ms", "max", 100.0),
)
_OPEN_LIMITS = {key for key, _, _ in OPEN_PERCENTILES}
_OPEN_NUMBERS = {"max_failure_ratio": (0.0, 1.0), "max_send_lag_ms": (0.0, math.inf)}


@dataclass(frozen=True)
class OpenThresholds:
    """[open] of the thresholds file, merged with [open.scenario.NAME]."""

    source: str
    scenario: str
    max_failure_ratio: float | None = None
    # The generator's own check: the p99 of how late arrivals were sent after their schedule.
    max_send_lag_ms: float | None = None
    # percentile key (p50_ms ... max_ms) -> {name: milliseconds}; "flow" is a whole flow.
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)


def _check_open_table(where: str, table: Any) -> dict[str, Any]:
    out = _checked(where, table, _OPEN_NUMBERS, _OPEN_LIMITS)
    latency = {key: out.pop(key) for key in sorted(_OPEN_LIMITS & set(out))}
    return {**out, "latency_ms": latency}


def _open_tables(source: str, data: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """[open] and every [open.scenario.NAME], checked."""
    if not isinstance(data, dict):
        raise ThresholdsError(f"{source}: [open] must be a table")
    scenarios = data.get("scenario", {})
    if not isinstance(scenarios, dict):
        raise ThresholdsError(f"{source}: [open.scenario] must hold [open.scenario.NAME] tables")
    own = {key: value for key, value in data.items() if key != "scenario"}
    checked = {
        name: _check_open_table(f"{source}: [open.scenario.{name}]", table)
        for name, table in scenarios.items()
    }
    return _check_open_table(f"{source}: [open]", own), checked


def parse_open_thresholds(text: str, scenario: str, source: str = "<string>") -> OpenThresholds:
    """[open] applies to every open-model scenario; [open.scenario.NAME] overrides it key by
    key, and its percentile tables name by name. The locust tables are checked as well."""
    parse_thresholds(text, scenario, source)
    merged, scenarios = _open_tables(source, tomllib.loads(text).get("open", {}))
    own = scenarios.get(scenario, {"latency_ms": {}})
    latency = {key: dict(limits) for key, limits in merged.pop("latency_ms").items()}
    for key, limits in own.pop("latency_ms").items():
        latency.setdefault(key, {}).update(limits)
    merged.update(own)
    return OpenThresholds(source=source, scenario=scenario, latency_ms=latency, **merged)


def load_open_thresholds(path: str | Path, scenario: str) -> OpenThresholds:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ThresholdsError(f"thresholds file {path}: {exc.strerror}") from None
    return parse_open_thresholds(text, scenario, source=str(path))


# --- what a run measured, and the verdict ----------------------------------------------------


@dataclass
class NameSample:
    """One request name's counts, response times bucketed as locust keeps them (ms -> count)."""

    requests: int = 0
    failures: int = 0
    response_times: dict[int, int] = field(default_factory=dict)

    def add(self, requests: int, failures: int, response_times: dict[int, int]) -> None:
        self.requests += requests
        self.failures += failures
        for ms, count in response_times.items():
            self.response_times[ms] = self.response_times.get(ms, 0) + count

    def percentile(self, percent: float) -> int:
        """Locust's own algorithm (stats.calculate_response_time_percentile), same results."""
        timed = sum(self.response_times.values())
        wanted = int(timed * percent)
        seen = 0
        for ms in sorted(self.response_times, reverse=True):
            seen += self.response_times[ms]
            if timed - seen <= wanted:
                return ms
        return 0


@dataclass
class RunSample:
    requests: int
    failures: int
    requests_per_s: float
    names: dict[str, NameSample] = field(default_factory=dict)

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Check:
    label: str
    limit: str
    measured: str
    status: str  # PASS, FAIL or SKIP (a named request that was never made)


def failure_ratio_check(limit: float, run: RunSample | OpenRun) -> Check:
    """Both gates': failed / all requests. No request at all is a failed run, not a perfect one."""
    ok = run.requests > 0 and run.failure_ratio <= limit
    return Check(
        "failure ratio",
        f"<= {limit:.2%}",
        f"{run.failure_ratio:.2%} ({run.failures}/{run.requests})",
        "PASS" if ok else "FAIL",
    )


def evaluate(thresholds: Thresholds, run: RunSample) -> list[Check]:
    checks: list[Check] = []
    if thresholds.max_failure_ratio is not None:
        checks.append(failure_ratio_check(thresholds.max_failure_ratio, run))
    if thresholds.min_requests_per_s is not None:
        ok = run.requests_per_s >= thresholds.min_requests_per_s
        checks.append(
            Check(
                "requests/s (all names)",
                f">= {thresholds.min_requests_per_s:g}",
                f"{run.requests_per_s:.1f}",
                "PASS" if ok else "FAIL",
            )
        )
    for name, limit in thresholds.p95_ms.items():
        sample = run.names.get(name)
        label = f"p95 {name}"
        if sample is None or not sample.response_times:
            checks.append(Check(label, f"<= {limit:g} ms", "no requests", "SKIP"))
            continue
        p95 = sample.percentile(0.95)
        checks.append(
            Check(label, f"<= {limit:g} ms", f"{p95} ms", "PASS" if p95 <= limit else "FAIL")
        )
    return checks


def exit_code(checks: list[Check], errors: bool) -> int:
    """Errors in the test code (locust's 1) outrank a breach: the figures are not trustworthy."""
    if errors:
        return EXIT_ERROR
    if any(check.status == "FAIL" for check in checks):
        return EXIT_THRESHOLDS
    return EXIT_OK


def verdict_table(
    thresholds: Thresholds | OpenThresholds,
    checks: list[Check],
    code: int,
    error: str = "errors in the run (see the log)",
) -> str:
    width = max([len(c.label) for c in checks] + [len("threshold")])
    limit_w = max([len(c.limit) for c in checks] + [len("limit")])
    measured_w = max([len(c.measured) for c in checks] + [len("measured")])
    lines = [
        f"thresholds: {thresholds.source} (scenario {thresholds.scenario})",
        f"  {'threshold':<{width}}  {'limit':<{limit_w}}  {'measured':<{measured_w}}  verdict",
    ]
    lines += [
        f"  {c.label:<{width}}  {c.limit:<{limit_w}}  {c.measured:<{measured_w}}  {c.status}"
        for c in checks
    ]
    failed = [c.label for c in checks if c.status == "FAIL"]
    skipped = sum(c.status == "SKIP" for c in checks)
    tail = f", {skipped} skipped (no requests)" if skipped else ""
    if code == EXIT_ERROR:
        summary = f"ERROR: {error}; exit {code}"
    elif failed:
        summary = f"FAIL: {len(failed)} breached ({'; '.join(failed)}){tail}; exit {code}"
    else:
        summary = f"PASS: {len(checks) - skipped} met{tail}; exit {code}"
    lines.append(f"  {summary}")
    return "\n".join(lines)


# --- the open-model gate's verdict -----------------------------------------------------------

# The label of the generator's own check: its failure voids the figures (exit EXIT_ERROR).
SEND_LAG_LABEL = "send lag p99 (generator)"


@dataclass
class OpenRun:
    """What openload.py measured: counts, the generator's p99 send lag, and per name (a request
    name, or "flow" for whole flows) its percentiles in ms by label (p50 ... max)."""

    requests: int
    failures: int
    send_lag_p99_ms: float
    names: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def evaluate_open(thresholds: OpenThresholds, run: OpenRun) -> list[Check]:
    checks: list[Check] = []
    if thresholds.max_send_lag_ms is not None:
        ok = run.send_lag_p99_ms <= thresholds.max_send_lag_ms
        checks.append(
            Check(
                SEND_LAG_LABEL,
                f"<= {thresholds.max_send_lag_ms:g} ms",
                f"{run.send_lag_p99_ms:.1f} ms",
                "PASS" if ok else "FAIL",
            )
        )
    if thresholds.max_failure_ratio is not None:
        checks.append(failure_ratio_check(thresholds.max_failure_ratio, run))
    for key, label, _ in OPEN_PERCENTILES:
        for name, limit in thresholds.latency_ms.get(key, {}).items():
            figures = run.names.get(name)
            check_label = f"{label} {name}"
            if not figures:
                checks.append(Check(check_label, f"<= {limit:g} ms", "no requests", "SKIP"))
                continue
            value = figures[label]
            checks.append(
                Check(
                    check_label,
                    f"<= {limit:g} ms",
                    f"{value:.1f} ms",
                    "PASS" if value <= limit else "FAIL",
                )
            )
    return checks


def open_exit_code(checks: list[Check]) -> int:
    """Sends behind schedule void the figures (EXIT_ERROR: they are partly the generator's);
    else a breach is EXIT_THRESHOLDS."""
    if any(c.label == SEND_LAG_LABEL and c.status == "FAIL" for c in checks):
        return EXIT_ERROR
    return exit_code(checks, errors=False)
