import os
import stat
from pathlib import Path

import pytest
from test_profiler_support import TOKEN, HelloApp

from wsgiprobe.envvars import env_flag
from wsgiprobe.profiler import ProfilerSettings, ProfilingMiddleware, settings_from_environment
from wsgiprobe.profiler.settings import DEFAULT_KEEP_HEADERS


def env(tmp_path: Path, **values: str) -> dict[str, str]:
    base = {
        "WSGIPROBE_PROFILER": "1",
        "WSGIPROBE_PROFILER_DIR": str(tmp_path / "profiles"),
        "WSGIPROBE_PROFILER_TOKEN": TOKEN,
    }
    base.update(values)
    return base


@pytest.mark.parametrize("value", [None, "", "0", "false", "FALSE", " off "])
def test_off_gives_none(value):
    environ = {} if value is None else {"WSGIPROBE_PROFILER": value}
    assert settings_from_environment(environ) is None


@pytest.mark.parametrize("value", ["1", "true", "TRUE", " yes ", "On", "on\n"])
def test_env_flag_on(value):
    assert env_flag({"X_FLAG": value}, "X_FLAG") is True


@pytest.mark.parametrize("value", [None, "", "  ", "0", "false", "No", " OFF "])
def test_env_flag_off(value):
    assert env_flag({} if value is None else {"X_FLAG": value}, "X_FLAG") is False


@pytest.mark.parametrize("value", [None, "", "  "])
def test_env_flag_unset_or_empty_is_its_default(value):
    assert env_flag({} if value is None else {"X_FLAG": value}, "X_FLAG", default=True) is True


@pytest.mark.parametrize("value", ["maybe", "2", "y", "-1", "enabled", "tru e"])
def test_env_flag_refuses_anything_else_naming_variable_and_value(value):
    with pytest.raises(ValueError) as caught:
        env_flag({"X_FLAG": value, "OTHER": "1"}, "X_FLAG")
    assert "X_FLAG" in str(caught.value) and repr(value) in str(caught.value)


def test_defaults(tmp_path):
    settings = settings_from_environment(env(tmp_path))
    assert settings == ProfilerSettings(directory=tmp_path / "profiles", token=TOKEN)
    assert settings.sample_rate == 0.0
    assert settings.max_profiles == 200
    assert settings.max_mb == 50.0
    assert settings.max_bytes == 50 * 1024 * 1024
    assert settings.path == "/_profiler"
    assert settings.scrub_headers == ()
    assert settings.keep_headers == DEFAULT_KEEP_HEADERS
    assert settings.redact_query is True


def test_every_variable(tmp_path):
    settings = settings_from_environment(
        env(
            tmp_path,
            WSGIPROBE_PROFILER="true",
            WSGIPROBE_PROFILER_SAMPLE_RATE="0.25",
            WSGIPROBE_PROFILER_MAX_PROFILES="7",
            WSGIPROBE_PROFILER_MAX_MB="1.5",
            WSGIPROBE_PROFILER_SCRUB_HEADERS=" X-Captcha-Oracle, X-Api-Key ,,",
            WSGIPROBE_PROFILER_KEEP_HEADERS="Host, X-Request-Id",
            WSGIPROBE_PROFILER_REDACT_QUERY="off",
            WSGIPROBE_PROFILER_PATH="/admin/prof",
        )
    )
    assert settings.sample_rate == 0.25
    assert settings.max_profiles == 7
    assert settings.max_mb == 1.5
    assert settings.scrub_headers == ("X-Captcha-Oracle", "X-Api-Key")
    assert settings.keep_headers == ("Host", "X-Request-Id")
    assert settings.redact_query is False
    assert settings.path == "/admin/prof"


def test_empty_optional_values_mean_defaults(tmp_path):
    settings = settings_from_environment(
        env(
            tmp_path,
            WSGIPROBE_PROFILER_TOKEN="",
            WSGIPROBE_PROFILER_SAMPLE_RATE="",
            WSGIPROBE_PROFILER_MAX_PROFILES="",
            WSGIPROBE_PROFILER_MAX_MB="",
            WSGIPROBE_PROFILER_SCRUB_HEADERS="",
            WSGIPROBE_PROFILER_REDACT_QUERY="",
            WSGIPROBE_PROFILER_PATH="",
        )
    )
    assert settings == ProfilerSettings(directory=tmp_path / "profiles")


def test_an_empty_allowlist_keeps_no_header(tmp_path):
    # Not the default: an empty list asks for less than the default keeps.
    settings = settings_from_environment(env(tmp_path, WSGIPROBE_PROFILER_KEEP_HEADERS=" , "))
    assert settings.keep_headers == ()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WSGIPROBE_PROFILER", "maybe"),
        ("WSGIPROBE_PROFILER_DIR", "relative/dir"),
        ("WSGIPROBE_PROFILER_SAMPLE_RATE", "1.5"),
        ("WSGIPROBE_PROFILER_SAMPLE_RATE", "-0.1"),
        ("WSGIPROBE_PROFILER_SAMPLE_RATE", "often"),
        ("WSGIPROBE_PROFILER_SAMPLE_RATE", "nan"),
        ("WSGIPROBE_PROFILER_MAX_PROFILES", "0"),
        ("WSGIPROBE_PROFILER_MAX_PROFILES", "2.5"),
        ("WSGIPROBE_PROFILER_MAX_PROFILES", "many"),
        ("WSGIPROBE_PROFILER_MAX_MB", "0"),
        ("WSGIPROBE_PROFILER_MAX_MB", "-3"),
        ("WSGIPROBE_PROFILER_MAX_MB", "inf"),
        ("WSGIPROBE_PROFILER_SCRUB_HEADERS", "X-Ok, Not A Header"),
        ("WSGIPROBE_PROFILER_KEEP_HEADERS", "Host;User-Agent"),
        ("WSGIPROBE_PROFILER_KEEP_HEADERS", "Host, X:Y"),
        ("WSGIPROBE_PROFILER_REDACT_QUERY", "sometimes"),
        ("WSGIPROBE_PROFILER_PATH", "_profiler"),
        ("WSGIPROBE_PROFILER_PATH", "/"),
        ("WSGIPROBE_PROFILER_PATH", "/_profiler/"),
    ],
)
def test_bad_value_names_variable_and_value(tmp_path, name, value):
    with pytest.raises(ValueError) as caught:
        settings_from_environment(env(tmp_path, **{name: value}))
    assert name in str(caught.value)
    assert repr(value) in str(caught.value)


def test_missing_directory(tmp_path):
    environ = env(tmp_path)
    del environ["WSGIPROBE_PROFILER_DIR"]
    with pytest.raises(ValueError, match="WSGIPROBE_PROFILER_DIR"):
        settings_from_environment(environ)


def test_bad_token_is_named_but_never_echoed(tmp_path):
    secret = "secret value;with=odd chars"
    with pytest.raises(ValueError) as caught:
        settings_from_environment(env(tmp_path, WSGIPROBE_PROFILER_TOKEN=secret))
    assert "WSGIPROBE_PROFILER_TOKEN" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_token_not_in_repr(tmp_path):
    assert TOKEN not in repr(settings_from_environment(env(tmp_path)))


def test_direct_construction_is_validated(tmp_path):
    with pytest.raises(ValueError):
        ProfilerSettings(directory=tmp_path, sample_rate=2.0)
    with pytest.raises(ValueError):
        ProfilerSettings(directory=tmp_path, max_profiles=0)
    with pytest.raises(ValueError):
        ProfilerSettings(directory=Path("relative"))
    with pytest.raises(ValueError, match="not a header name"):
        ProfilerSettings(directory=tmp_path, keep_headers=("Host", "User Agent"))


# -- the profile directory ---------------------------------------------------------------------


def test_missing_directory_is_created_0700(tmp_path):
    directory = tmp_path / "a" / "profiles"
    ProfilingMiddleware(HelloApp(), ProfilerSettings(directory=directory))
    assert directory.is_dir()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o720])
def test_writable_by_others_is_refused(tmp_path, mode):
    directory = tmp_path / "profiles"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(RuntimeError, match="writable"):
        ProfilingMiddleware(HelloApp(), ProfilerSettings(directory=directory))


def test_owned_by_someone_else_is_refused(tmp_path):
    if os.geteuid() == 0:
        directory = tmp_path / "profiles"
        directory.mkdir(mode=0o700)
        os.chown(directory, 65534, 65534)
    else:
        directory = Path("/")  # root's, and not writable by others
    with pytest.raises(RuntimeError, match="owned by uid"):
        ProfilingMiddleware(HelloApp(), ProfilerSettings(directory=directory))


def test_a_file_is_refused(tmp_path):
    path = tmp_path / "profiles"
    path.write_text("")
    with pytest.raises(RuntimeError, match="not a directory"):
        ProfilingMiddleware(HelloApp(), ProfilerSettings(directory=path))
