"""Imports a loadtests/ script as a module (loadtests/ is scripts, not a package): `load("run")`,
`load("bench/bench_tls")`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
# The scripts import each other as their own folder's modules (target, benchlib).
sys.path[:0] = [str(ROOT / "loadtests"), str(ROOT / "loadtests" / "bench")]


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"loadtests_{Path(name).name}", ROOT / "loadtests" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
