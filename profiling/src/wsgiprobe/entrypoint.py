"""The WSGI entrypoint app servers are pointed at: ``wsgiprobe.entrypoint:application``.

It loads the real app named by ``WSGIPROBE_APP``, so that the toolkit's wrappers (profiler,
pdb hook, lazyinit) can be put around any app without touching its code. A plain module
attribute: uWSGI looks the callable up in the module's dict.
"""

from wsgiprobe.appspec import app_from_environment

application = app_from_environment()
