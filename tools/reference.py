"""What the generated references share (varref.py, envref.py): write the file, or with --check
write nothing and exit 1 with a diff while the committed one is stale."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path


def write_or_check(
    argv: list[str] | None, description: str, root: Path, output: Path, generated: str
) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 with a diff when the committed file differs",
    )
    args = parser.parse_args(argv)
    path = root / output
    committed = path.read_text() if path.exists() else ""
    if not args.check:
        if generated != committed:
            path.write_text(generated)
        print(f"wrote {output}")
        return 0
    if committed == generated:
        return 0
    diff = list(
        difflib.unified_diff(
            committed.splitlines(),
            generated.splitlines(),
            f"{output} (committed)",
            f"{output} (generated)",
            lineterm="",
        )
    )
    print("\n".join(diff[:60]))
    if len(diff) > 60:
        print(f"... {len(diff) - 60} more diff lines")
    print(f"{output} is out of date: run `make reference`", file=sys.stderr)
    return 1
