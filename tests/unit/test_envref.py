"""One source for every WSGIPROBE_* variable: the code that reads it, and envvars.MEANINGS.

profiling/README.md's table is generated from them by tools/envref.py (`make reference`); these
tests fail when the table is stale, when a variable is read without a meaning, and when the
generator misses a way the code reads one.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import envref

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_table_is_the_generated_one():
    variables, _ = envref.collect(ROOT / envref.SOURCES)
    committed = (ROOT / envref.OUTPUT).read_text()
    assert committed == envref.render(committed, variables), (
        "profiling/README.md's WSGIPROBE_* table is stale: run `make reference`"
    )


def test_every_variable_read_has_one_default_and_a_meaning():
    _, problems = envref.collect(ROOT / envref.SOURCES)
    assert problems == []


def test_every_variable_the_deploy_writes_is_read_by_the_toolkit():
    written = {
        match
        for path in ROOT.glob("roles/*/templates/*.j2")
        for match in re.findall(r"\b(WSGIPROBE_[A-Z0-9_]+)=", path.read_text())
    }
    variables, _ = envref.collect(ROOT / envref.SOURCES)
    assert written - {variable.name for variable in variables} == set()


def _package(tmp_path: Path, modules: dict[str, str]) -> Path:
    for name, source in modules.items():
        path = tmp_path / "wsgiprobe" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return tmp_path


MEANINGS = """\
    MEANINGS = {
        "WSGIPROBE_FLAG": "a", "WSGIPROBE_PORT": "b", "WSGIPROBE_HOST": "c",
        "WSGIPROBE_LIST": "d", "WSGIPROBE_DIR": "e", "WSGIPROBE_KEY": "f",
    }

    def env_flag(env, name, default=False):
        raw = env.get(name, "")
        return raw == "1" if raw else default

    def env_int(env, name, default):
        return int(env.get(name) or default)

    def invalid(env, name, expected):
        return ValueError(f"{name} must be {expected}, got {env.get(name)!r}")
"""


def test_the_reads_are_found_with_their_defaults_across_modules(tmp_path):
    sources = _package(
        tmp_path,
        {
            "__init__.py": "",
            "envvars.py": MEANINGS,
            "names.py": 'ENV_PORT = "WSGIPROBE_PORT"\nBASE = 4440\n',
            "sub/__init__.py": "",
            "sub/reads.py": """\
                import os
                from wsgiprobe import names
                from ..envvars import env_flag, env_int, invalid
                from wsgiprobe.names import BASE

                KEEP = ("Host", "Accept")

                def _listed(env, name):
                    return tuple(env[name].split(","))

                def read(env):
                    if env_int(env, names.ENV_PORT, BASE) < 1:
                        raise invalid(env, "WSGIPROBE_PORT", "a port")
                    return (
                        env_flag(env, "WSGIPROBE_FLAG"),
                        env.get("WSGIPROBE_HOST", "").strip().lower() or "127.0.0.1",
                        os.getenv("WSGIPROBE_HOST", "127.0.0.1"),
                        _listed(env, "WSGIPROBE_LIST") if "WSGIPROBE_LIST" in env else KEEP,
                        os.environ.get("WSGIPROBE_DIR") or None,
                        os.environ["WSGIPROBE_KEY"],
                        os.environ.get("NOT_OURS"),
                    )
            """,
        },
    )
    variables, problems = envref.collect(sources)
    assert problems == []
    assert {variable.name: variable.default for variable in variables} == {
        "WSGIPROBE_DIR": "none",
        "WSGIPROBE_FLAG": "off",
        "WSGIPROBE_HOST": "`127.0.0.1`",
        "WSGIPROBE_KEY": "none: required",
        "WSGIPROBE_LIST": "`Host,Accept`",
        "WSGIPROBE_PORT": "`4440`",
    }
    assert {variable.modules for variable in variables} == {("sub.reads",)}


def test_a_read_without_a_meaning_or_with_two_defaults_is_a_problem(tmp_path):
    sources = _package(
        tmp_path,
        {
            "envvars.py": MEANINGS,
            "one.py": """\
                import os
                PORT = os.environ.get("WSGIPROBE_PORT", "1")
                NEW = os.environ.get("WSGIPROBE_NEW")
                os.environ.pop("WSGIPROBE_FLAG", None)  # a way of reading envref does not know
            """,
            "two.py": 'import os\nPORT = os.environ.get("WSGIPROBE_PORT", "2")\n',
        },
    )
    _, problems = envref.collect(sources)
    assert "WSGIPROBE_NEW is read but has no meaning in MEANINGS" in problems
    assert (
        "WSGIPROBE_PORT is read with different defaults: wsgiprobe.one:2 (`1`), "
        "wsgiprobe.two:2 (`2`)"
    ) in problems
    assert "MEANINGS describes WSGIPROBE_FLAG, which no code reads" in problems
    assert "WSGIPROBE_FLAG is named at wsgiprobe.one:4 but no read of it is found" in problems


def test_the_check_mode_refuses_a_stale_table(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / envref.SOURCES / "wsgiprobe", tmp_path / envref.SOURCES / "wsgiprobe")
    (tmp_path / envref.OUTPUT).write_text((ROOT / envref.OUTPUT).read_text())
    monkeypatch.setattr(envref, "ROOT", tmp_path)
    assert envref.main(["--check"]) == 0
    settings = tmp_path / envref.SOURCES / "wsgiprobe/profiler/settings.py"
    settings.write_text(
        settings.read_text().replace(
            '"WSGIPROBE_PROFILER_MAX_PROFILES", 200', '"WSGIPROBE_PROFILER_MAX_PROFILES", 100'
        )
    )
    capsys.readouterr()
    assert envref.main(["--check"]) == 1
    assert "+| `WSGIPROBE_PROFILER_MAX_PROFILES` | `100` |" in capsys.readouterr().out
    assert envref.main([]) == 0
    assert envref.main(["--check"]) == 0
