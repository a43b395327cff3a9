#!/usr/bin/env python3
"""Manage the local Debian VM (systemd-nspawn): `localvm.py --help`. The code is in nspawnvm/."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nspawnvm.cli import main

if __name__ == "__main__":
    sys.exit(main())
