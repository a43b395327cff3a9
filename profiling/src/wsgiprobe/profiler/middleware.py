"""ProfilingMiddleware: profile only the requests that ask for it (token) or are sampled.

Everything else goes straight to the app: the fast path costs a PATH_INFO prefix check, one
environ lookup for the trigger header, one for the cookie (parsed only if it can hold the
trigger), and random() only when sampling is on.

A profiled request runs the app call, each next() of its body and its close() under one
cProfile profiler, without buffering the body. The profile is saved when the server calls
close(), after the client has the whole response.

Event streams (Content-Type text/event-stream, whenever start_response shows it) are passed
through unprofiled and nothing is saved: a profile of an hours-long stream says nothing and
would keep this process's profiler busy. Other lazy iterables are profiled chunk by chunk: a
"neither list nor tuple" rule would exclude every Flask response (always a ClosingIterator).
"""

from __future__ import annotations

import cProfile
import hmac
import logging
import os
import pickle
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from wsgiprobe import workers

from . import calltree
from .settings import TRIGGER_COOKIE, ProfilerSettings
from .storage import ProfileStore, new_profile_id
from .ui import ProfilerUI

logger = logging.getLogger("wsgiprobe.profiler")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_HEADER_KEY = "HTTP_X_WSGIPROBE_PROFILE"
_COOKIE_NEEDLE = TRIGGER_COOKIE + "="
# One active profile per process, shared by every middleware in it: two cProfile profilers at
# once fail on Python 3.12+ and mix each other's calls before that.
_PROFILE_LOCK = threading.Lock()


class ProfilingMiddleware:
    def __init__(self, app: WSGIApp, settings: ProfilerSettings) -> None:
        self.app = app
        self.settings = settings
        self.store = ProfileStore(settings.directory, settings.max_profiles, settings.max_bytes)
        self.store.prepare()
        self.store.prune()  # the bounds may have been lowered since the last run
        self.ui = ProfilerUI(self.store, settings)
        self._ui_path = settings.path
        self._ui_path_len = len(settings.path)
        self._token = settings.token.encode()
        self._sample_rate = settings.sample_rate
        self._random = random.random  # random reseeds itself in forked children
        self.scrubber = settings.scrubber()
        ignored = settings.ignored_keep_headers()
        if ignored:
            logger.warning(
                "kept headers %s are scrubbed or look like credentials: their values are redacted",
                ", ".join(ignored),
            )
        # Counters, for tests and debugging; approximate under threads.
        self.profiles_saved = 0
        self.busy_skips = 0
        if 0 < len(settings.token) < 16:
            logger.warning("the profiler's trigger token is short: anyone guessing it can profile")

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(self._ui_path):
            rest = path[self._ui_path_len :]
            if not rest or rest[0] == "/":
                return self.ui.serve(environ, start_response, rest)
        if self._token:
            value = environ.get(_HEADER_KEY)
            if value is not None and self._matches(value):
                return self._profile(environ, start_response)
            cookie = environ.get("HTTP_COOKIE")
            if cookie is not None and _COOKIE_NEEDLE in cookie and self._cookie_matches(cookie):
                return self._profile(environ, start_response)
        if self._sample_rate and self._random() < self._sample_rate:
            return self._profile(environ, start_response)
        return self.app(environ, start_response)

    def _matches(self, value: str) -> bool:
        # Constant time: the token must not leak through response timing.
        return hmac.compare_digest(value.encode("utf-8", "surrogatepass"), self._token)

    def _cookie_matches(self, cookie: str) -> bool:
        found = False
        for part in cookie.split(";"):
            name, sep, value = part.partition("=")
            if sep and name.strip() == TRIGGER_COOKIE:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                found |= self._matches(value)
        return found

    def _profile(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not _PROFILE_LOCK.acquire(blocking=False):
            self.busy_skips += 1
            logger.debug("profile skipped: this process is profiling another request")
            return self.app(environ, start_response)
        run = _ProfileRun(self, environ, start_response)
        try:
            app_iter = run.call(_app_call, self.app, environ, run.start_response)
        except BaseException as exc:
            run.error = type(exc).__name__
            run.finish()
            raise
        if run.streaming:
            # An event stream (seen in start_response): hand the app's own iterable over.
            run.abandon()
            return app_iter
        try:
            return _ProfiledBody(run, app_iter)
        except BaseException:  # not iterable: the server will fail it; free the lock first
            run.abandon()
            raise

    def _save(self, run: _ProfileRun, duration_ms: float) -> None:
        # Dozer's tree is built when the profile is read (see calltree): most never are.
        codes, entries = calltree.compact(run.prof.getstats())
        # Profiled time: the top-level phases (app call, body, close), not the profiler's own.
        cost_ms = calltree.top_level_ms(codes, entries)
        context = workers.describe()
        worker, pid = context.get("worker"), context.get("pid", os.getpid())
        environ = run.environ
        status = run.status
        safe_environ = self.scrubber.environ(environ)
        record = {
            "worker": worker,
            "server": context.get("server"),
            "pid": pid,
            "thread": threading.get_ident(),
            "method": environ.get("REQUEST_METHOD", ""),
            "path": environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
            "query": safe_environ["QUERY_STRING"],  # scrubbed once, for both
            "status": int(status[:3]) if status and status[:3].isdigit() else None,
            "duration_ms": round(duration_ms, 3),
            "cost_ms": round(cost_ms, 3),
            "error": run.error,
            "saved_at": time.time(),
        }
        safe_environ["thread_id"] = str(record["thread"])  # as Dozer records it
        data = {
            "time": datetime.now(),
            "profile": calltree.DeferredTree(codes, entries),  # Dozer's tree once unpickled
            "environ": safe_environ,
            "wsgiprobe": record,
        }
        profile_id = new_profile_id(worker, pid)
        pruned = self.store.save(profile_id, pickle.dumps(data, pickle.HIGHEST_PROTOCOL), record)
        self.profiles_saved += 1
        # The path without its query string: a query may carry secrets, the log is wider read.
        logger.info(
            "profile saved: worker=%s method=%s path=%r status=%s ms=%.1f file=%s.pkl",
            worker,
            record["method"],
            environ.get("PATH_INFO", ""),
            record["status"] if record["status"] is not None else run.error,
            duration_ms,
            profile_id,
        )
        if profile_id in pruned:
            logger.warning(
                "profile %s alone is larger than WSGIPROBE_PROFILER_MAX_MB: removed at once",
                profile_id,
            )


# The three phases of a profiled request, as the profile's top-level entries show them.
def _app_call(app: WSGIApp, environ: dict[str, Any], start_response: StartResponse) -> Any:
    return app(environ, start_response)


def _body_next(iterator: Iterator[bytes]) -> bytes:
    return next(iterator)


def _body_close(close: Callable[[], Any]) -> None:
    close()


class _ProfileRun:
    """One profiled request: its profiler, what start_response saw, and the lock it holds."""

    def __init__(
        self, middleware: ProfilingMiddleware, environ: dict[str, Any], start_response: Any
    ) -> None:
        self.middleware = middleware
        self.environ = environ
        self._start_response = start_response
        self.prof = cProfile.Profile()
        self.started = time.perf_counter()
        self.status: str | None = None
        self.streaming = False
        self.incomplete = False  # the profiler could not run for part of the request
        self.error: str | None = None
        self._done = False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        self.status = status
        for name, value in headers:
            if name.lower() == "content-type":
                self.streaming = value.strip().lower().startswith("text/event-stream")
        return self._start_response(status, headers, exc_info)

    def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """func(*args) under this request's profiler."""
        try:
            self.prof.enable()
        except ValueError:
            # Python 3.12+: another profiling tool is active in this process. Serve the
            # request anyway; its profile would be partial, so it is not saved.
            self.incomplete = True
            return func(*args)
        try:
            return func(*args)
        finally:
            self.prof.disable()

    def finish(self) -> None:
        """Save the profile (unless it was abandoned) and let the next one start."""
        if self._done:
            return
        self._done = True
        duration_ms = (time.perf_counter() - self.started) * 1000
        try:
            if not (self.streaming or self.incomplete):
                self.middleware._save(self, duration_ms)
        except Exception as exc:  # a full disk must not turn into a failed request
            logger.warning("profile not saved: %s: %s", type(exc).__name__, exc)
        finally:
            _PROFILE_LOCK.release()

    def abandon(self) -> None:
        """Drop the profile unsaved (event streams, responses never closed)."""
        if not self._done:
            self._done = True
            _PROFILE_LOCK.release()


class _ProfiledBody:
    """The app's response body, iterated and closed under the profiler, never buffered."""

    def __init__(self, run: _ProfileRun, app_iter: Iterable[bytes]) -> None:
        self._run: _ProfileRun | None = run
        self._app_iter = app_iter
        self._iterator = iter(app_iter)

    def __iter__(self) -> _ProfiledBody:
        return self

    def __next__(self) -> bytes:
        run = self._run
        if run is None:
            return next(self._iterator)
        try:
            return run.call(_body_next, self._iterator)
        except StopIteration:
            raise
        except BaseException as exc:
            run.error = type(exc).__name__
            raise
        finally:
            if run.streaming:
                # The app called start_response lazily, with an event stream: stop profiling
                # and pass the rest through.
                run.abandon()
                self._run = None

    def close(self) -> None:
        run, self._run = self._run, None
        close = getattr(self._app_iter, "close", None)
        if run is None:
            if close is not None:
                close()
            return
        try:
            if close is not None:
                run.call(_body_close, close)
        except BaseException as exc:
            run.error = run.error or type(exc).__name__
            raise
        finally:
            run.finish()

    def __del__(self) -> None:
        # A server that drops the body without close() must not keep profiling off for good.
        run = getattr(self, "_run", None)
        if run is not None:
            run.abandon()
