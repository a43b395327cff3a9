import importlib
import io
import json
import os
import sys
import types

import pytest

from wsgiprobe import appspec, compose, lazyinit


@pytest.fixture
def fake_module(monkeypatch):
    module = types.ModuleType("fake_wsgi_mod")

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"hi"]

    def create_app(name="default", *, suffix=""):
        def made(environ, start_response):
            start_response("200 OK", [])
            return [f"{name}{suffix}".encode()]

        return made

    module.app = app
    module.create_app = create_app
    module.not_callable = 42
    monkeypatch.setitem(sys.modules, "fake_wsgi_mod", module)
    return module


def test_load_app_returns_the_named_callable(fake_module):
    assert appspec.load_app("fake_wsgi_mod:app") is fake_module.app


def body(app):
    return b"".join(app({"PATH_INFO": "/", "REQUEST_METHOD": "GET"}, lambda *args: None))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("fake_wsgi_mod:create_app()", b"default"),
        ("fake_wsgi_mod:create_app('prod')", b"prod"),
        ("fake_wsgi_mod: create_app( 'prod', suffix='!' )", b"prod!"),
    ],
)
def test_a_factory_call_makes_the_app_once(fake_module, spec, expected):
    assert body(appspec.load_app(spec)) == expected


@pytest.mark.parametrize(
    "spec",
    ["fake_wsgi_mod", ":app", "fake_wsgi_mod:", "fake_wsgi_mod:app.x", "fake_wsgi_mod:a b",
     "fake_wsgi_mod:create_app()()", "a..b:app", "fake_wsgi_mod:os.getcwd()"],
)  # fmt: skip
def test_malformed_spec_is_a_clear_error(spec):
    with pytest.raises(ValueError, match="'module:name' or 'module:factory\\(\\)'"):
        appspec.load_app(spec)


def test_a_factory_takes_literal_arguments_only(fake_module):
    with pytest.raises(ValueError, match="literals"):
        appspec.load_app("fake_wsgi_mod:create_app(__import__('os'))")


def test_a_factory_named_without_its_call_is_refused_saying_how_to_call_it(fake_module):
    with pytest.raises(
        ValueError, match="an app factory\\? Call it: 'fake_wsgi_mod:create_app\\(\\)'"
    ):
        appspec.load_app("fake_wsgi_mod:create_app")


def test_calling_what_is_no_factory_is_refused(fake_module):
    with pytest.raises(ValueError, match="not a factory"):
        appspec.load_app("fake_wsgi_mod:not_callable()")


def test_spec_naming_a_non_callable_is_refused(fake_module):
    with pytest.raises(ValueError, match="not name a WSGI callable"):
        appspec.load_app("fake_wsgi_mod:not_callable")


def test_missing_variable_is_a_clear_error():
    with pytest.raises(RuntimeError, match="WSGIPROBE_APP"):
        appspec.app_from_environment({})


def test_entrypoint_exposes_the_app_as_a_module_attribute(fake_module, monkeypatch):
    monkeypatch.setenv("WSGIPROBE_APP", "fake_wsgi_mod:app")
    monkeypatch.delitem(sys.modules, "wsgiprobe.entrypoint", raising=False)
    entrypoint = importlib.import_module("wsgiprobe.entrypoint")
    # In the module's dict, where uWSGI looks for it (not through a module __getattr__), and
    # the real app behind the toolkit's wrappers.
    application = vars(entrypoint)["application"]
    body = application({"PATH_INFO": "/", "REQUEST_METHOD": "GET"}, lambda *args: None)
    assert b"".join(body) == b"hi"


# -- which release the app's module was loaded from --------------------------------------------

RELEASE_PKG = "release_probe_pkg"
APP_SOURCE = """
def app(environ, start_response):
    start_response("200 OK", [])
    return [b"%s"]
"""


@pytest.fixture
def releases(tmp_path, monkeypatch):
    """releases/r1 and r2 with the app's package, ``current`` -> releases/r1, and the package
    importable through ``current`` (as the app server's virtualenv path is)."""
    for name in ("r1", "r2"):
        package = tmp_path / "releases" / name / RELEASE_PKG
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "mod.py").write_text(APP_SOURCE % name)
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "releases" / "r1")
    monkeypatch.syspath_prepend(str(current))  # restored, with the import caches, after
    monkeypatch.delenv("WSGIPROBE_LAZYINIT_DIR", raising=False)
    monkeypatch.setattr(lazyinit, "_default", lazyinit.Registry())
    env = {
        "WSGIPROBE_APP": f"{RELEASE_PKG}.mod:app",
        "WSGIPROBE_RELEASES_DIR": str(tmp_path / "releases"),
    }

    def switch(name):
        current.unlink()
        current.symlink_to(tmp_path / "releases" / name)

    yield env, switch
    forget_the_package()


def forget_the_package():
    for name in [name for name in sys.modules if name.partition(".")[0] == RELEASE_PKG]:
        del sys.modules[name]
    importlib.invalidate_caches()


def test_release_of_resolves_the_current_link(releases):
    env, switch = releases
    module = importlib.import_module(f"{RELEASE_PKG}.mod")
    assert f"{os.sep}current{os.sep}" in module.__file__  # loaded through the link
    assert compose.release_of(env) == "r1"
    switch("r2")
    forget_the_package()  # a new worker loads the app again, from the new release
    importlib.import_module(f"{RELEASE_PKG}.mod")
    assert compose.release_of(env) == "r2"


def test_the_app_keeps_the_release_it_was_built_from(releases):
    env, switch = releases
    app = compose.build_application(env)
    switch("r2")  # the deploy switches; this worker still runs r1's code
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/lazyinit", "QUERY_STRING": ""}
    environ["wsgi.errors"] = io.StringIO()
    answer = json.loads(b"".join(app(environ, lambda *args: None)))
    assert answer["release"] == "r1"
    assert b"".join(app({"PATH_INFO": "/", "REQUEST_METHOD": "GET"}, lambda *a: None)) == b"r1"


def test_release_of_is_none_without_a_known_release(releases, tmp_path, fake_module):
    env, _ = releases
    assert compose.release_of(env) is None  # the module is not loaded (yet)
    importlib.import_module(f"{RELEASE_PKG}.mod")
    assert compose.release_of({"WSGIPROBE_APP": env["WSGIPROBE_APP"]}) is None  # no dir set
    assert compose.release_of({**env, "WSGIPROBE_RELEASES_DIR": ""}) is None
    assert compose.release_of({"WSGIPROBE_RELEASES_DIR": env["WSGIPROBE_RELEASES_DIR"]}) is None
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert compose.release_of({**env, "WSGIPROBE_RELEASES_DIR": str(elsewhere)}) is None
    # A module without a file (built in memory, as a test's or a frozen one).
    assert compose.release_of({**env, "WSGIPROBE_APP": "fake_wsgi_mod:app"}) is None
