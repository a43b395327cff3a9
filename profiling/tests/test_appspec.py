import importlib
import sys
import types

import pytest

from wsgiprobe import appspec


@pytest.fixture
def fake_module(monkeypatch):
    module = types.ModuleType("fake_wsgi_mod")

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"hi"]

    module.app = app
    module.not_callable = 42
    monkeypatch.setitem(sys.modules, "fake_wsgi_mod", module)
    return module


def test_load_app_returns_the_named_callable(fake_module):
    assert appspec.load_app("fake_wsgi_mod:app") is fake_module.app


@pytest.mark.parametrize("spec", ["fake_wsgi_mod", ":app", "fake_wsgi_mod:"])
def test_malformed_spec_is_a_clear_error(spec):
    with pytest.raises(ValueError, match="module:attribute"):
        appspec.load_app(spec)


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
