"""How the tool reports: expected failures (one line, no traceback) and progress on stderr.

Other modules raise these errors and call say(); cli.main alone turns an error into its message
and exit status.
"""

from __future__ import annotations

import sys


class LocalVMError(Exception):
    """An expected failure: reported as one `localvm: error:` line, without a traceback."""


class PreconditionError(LocalVMError):
    """The host cannot run the VM at all (exit status 2)."""


def say(message: str) -> None:
    print(f"localvm: {message}", file=sys.stderr, flush=True)
