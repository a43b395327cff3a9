"""The WSGI entrypoint app servers are pointed at: ``wsgiprobe.entrypoint:application``.

It loads the real app named by ``WSGIPROBE_APP`` and puts the toolkit around it, so that any
app gets the profiler and the lazyinit route without touching its code. A plain module
attribute: uWSGI looks the callable up in the module's dict.
"""

from wsgiprobe.compose import build_application

application = build_application()
