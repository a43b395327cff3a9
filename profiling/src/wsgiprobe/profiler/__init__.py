"""A WSGI profiling middleware around Dozer's profiler UI, safe to leave on in production.

    from wsgiprobe.profiler import ProfilingMiddleware, settings_from_environment

    settings = settings_from_environment(os.environ)  # None when WSGIPROBE_PROFILER is off
    if settings is not None:
        app = ProfilingMiddleware(app, settings)

Only requests carrying the trigger token (header ``X-Wsgiprobe-Profile`` or cookie
``wsgiprobe_profile``) or picked by the sample rate are profiled, one at a time per process;
event streams pass through unprofiled. Profiles land, scrubbed of secrets, in one directory
shared by all workers and bounded in count and size; ``/_profiler/`` shows them.
"""

from .middleware import ProfilingMiddleware
from .settings import ProfilerSettings, settings_from_environment

__all__ = ["ProfilerSettings", "ProfilingMiddleware", "settings_from_environment"]
