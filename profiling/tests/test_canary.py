import os
import subprocess
import sys
import textwrap

import pytest

from wsgiprobe import canary, lazyinit

MODULE = "canary_fake_app"

# An app answering 200 on every path, and its requests, for the tests to look at.
ANSWERS_200 = """
requests = []

def app(environ, start_response):
    requests.append(environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """A fresh default registry. The module functions (``lazyinit.register``, ``run_pending``,
    which the fake apps and the canary call) are bound to the registry made at import, so they
    are replaced along with ``_default``: inits other tests registered stay out of the canary's
    run, and the fake apps' inits stay out of theirs."""
    fresh = lazyinit.Registry()
    monkeypatch.setattr(lazyinit, "_default", fresh)
    for name in ("register", "run_pending", "pending", "done"):
        monkeypatch.setattr(lazyinit, name, getattr(fresh, name))
    return fresh


@pytest.fixture
def fake_app(tmp_path, monkeypatch):
    """Write the app's module (a file in a tmp dir on sys.path, as a release's is), name it in
    WSGIPROBE_APP; the canary then imports it. Forgotten by sys.modules after the test."""
    sys.modules.pop(MODULE, None)
    monkeypatch.syspath_prepend(str(tmp_path))  # restored, with the import caches, after
    monkeypatch.setenv("WSGIPROBE_APP", f"{MODULE}:app")

    def write(source):
        (tmp_path / f"{MODULE}.py").write_text(textwrap.dedent(source))

    yield write
    sys.modules.pop(MODULE, None)


def test_a_200_exits_0_and_says_so(fake_app, capsys):
    fake_app(ANSWERS_200)
    assert canary.main([]) == canary.EXIT_OK == 0
    out, err = capsys.readouterr()
    assert "GET /healthz answered 200 OK" in out
    assert err == ""
    assert sys.modules[MODULE].requests == ["/healthz"]  # one GET, to the default path


def test_a_500_exits_1_naming_the_status_with_the_start_of_the_body(fake_app, capsys):
    fake_app(
        """
        def app(environ, start_response):
            start_response("500 INTERNAL SERVER ERROR", [("Content-Type", "text/plain")])
            return [b"database unreachable: ", b"x" * 5000]
        """
    )
    assert canary.main([]) == canary.EXIT_FAILED == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "GET /healthz answered 500 INTERNAL SERVER ERROR" in err
    assert "database unreachable: xxx" in err
    assert "x" * canary.BODY_SHOWN not in err  # the start of the body, not all of it


def test_an_app_whose_import_raises_exits_1_with_the_traceback(fake_app, capsys):
    fake_app(
        """
        import os

        SECRET_KEY = os.environ["CANARY_TEST_SECRET_THAT_IS_NOT_SET"]
        """
    )
    assert canary.main([]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback (most recent call last)" in err
    assert f"{MODULE}.py" in err  # where, in the app
    assert "KeyError: 'CANARY_TEST_SECRET_THAT_IS_NOT_SET'" in err


@pytest.mark.parametrize("code", [0, 2])
def test_an_app_exiting_on_import_fails_the_check(fake_app, capsys, code):
    # Not a pass (0) nor bad usage of the canary (2): the release did not load.
    fake_app(f"import sys\nsys.exit({code})\n")
    assert canary.main([]) == 1
    _, err = capsys.readouterr()
    assert "SystemExit" in err


def test_an_init_that_raises_exits_1_and_no_request_is_sent(fake_app, capsys, registry):
    fake_app(
        ANSWERS_200
        + """
from wsgiprobe import lazyinit

def connect():
    raise ConnectionError("redis down")

lazyinit.register("store", connect)
"""
    )
    assert canary.main([]) == 1
    _, err = capsys.readouterr()
    assert "ConnectionError: redis down" in err
    assert sys.modules[MODULE].requests == []
    assert registry.pending() == ["store"]


def test_the_inits_run_before_the_get(fake_app, capsys, registry):
    fake_app(
        """
        from wsgiprobe import lazyinit

        warm = []
        lazyinit.register("fonts", lambda: warm.append("fonts"))

        def app(environ, start_response):
            if not warm:
                start_response("503 Service Unavailable", [])
                return [b"cold"]
            start_response("200 OK", [])
            return [b"warm"]
        """
    )
    assert canary.main([]) == 0
    out, _ = capsys.readouterr()
    assert "answered 200 OK (inits run: fonts)" in out
    assert registry.done().keys() == {"fonts"}


def test_the_path_asked_for_is_the_one_sent(fake_app, capsys):
    fake_app(
        """
        def app(environ, start_response):
            if environ["PATH_INFO"] == "/ready":
                start_response("200 OK", [])
                return [b"ready"]
            start_response("404 Not Found", [])
            return [b"no such page"]
        """
    )
    assert canary.main(["--path", "/ready"]) == 0
    assert "GET /ready answered 200 OK" in capsys.readouterr().out
    assert canary.main([]) == 1
    assert "GET /healthz answered 404 Not Found: no such page" in capsys.readouterr().err


def test_a_lazy_iterable_is_read_through_and_closed(fake_app, capsys):
    # start_response comes with the first chunk, after the app returned its iterable; close()
    # is the WSGI server's duty (a generator's finally would run anyway once exhausted).
    fake_app(
        """
        closed = []

        class Answer:
            def __init__(self, environ, start_response):
                self.start_response = start_response

            def __iter__(self):
                self.start_response("200 OK", [])
                yield b"ok"

            def close(self):
                closed.append(True)

        app = Answer
        """
    )
    assert canary.main([]) == 0
    assert "answered 200 OK" in capsys.readouterr().out
    assert sys.modules[MODULE].closed == [True]


@pytest.mark.parametrize("status", ["204 No Content", "302 Found", "404 Not Found"])
def test_only_a_200_passes(fake_app, capsys, status):
    fake_app(
        f"""
        def app(environ, start_response):
            start_response({status!r}, [])
            return [b""]
        """
    )
    assert canary.main([]) == 1
    assert f"answered {status}" in capsys.readouterr().err


@pytest.mark.parametrize("path", ["healthz", ""])
def test_a_path_not_starting_with_a_slash_is_bad_usage(fake_app, capsys, path):
    fake_app(ANSWERS_200)
    with pytest.raises(SystemExit) as exited:
        canary.main(["--path", path])
    assert exited.value.code == canary.EXIT_USAGE == 2
    assert "--path must start with /" in capsys.readouterr().err
    assert MODULE not in sys.modules  # refused before loading the app


def test_without_wsgiprobe_app_exits_1_with_the_reason(monkeypatch, capsys):
    monkeypatch.delenv("WSGIPROBE_APP", raising=False)
    assert canary.main([]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "WSGIPROBE_APP is not set" in err


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        ([], 0, "GET /healthz answered 200 OK (inits run: fonts)"),
        (["--path", "/fail"], 1, "GET /fail answered 500 Internal Server Error: broken"),
        (["--path", "fail"], 2, "--path must start with /"),
    ],
)
def test_run_as_a_module(tmp_path, args, code, said):
    (tmp_path / f"{MODULE}.py").write_text(
        textwrap.dedent(
            """
            from wsgiprobe import lazyinit

            lazyinit.register("fonts", lambda: None)

            def app(environ, start_response):
                if environ["PATH_INFO"] == "/fail":
                    start_response("500 Internal Server Error", [])
                    return [b"broken"]
                start_response("200 OK", [])
                return [b"ok"]
            """
        )
    )
    env = {**os.environ, "WSGIPROBE_APP": f"{MODULE}:app", "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "wsgiprobe.canary", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == code, result.stderr
    assert said in (result.stdout if code == 0 else result.stderr)


# A Flask app from a factory, its key as an app that reads no FLASK_* variable keeps it.
FLASK_APP = """
from flask import Flask

def create_app():
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY=KEY)

    @app.get("/healthz")
    def healthz():
        return "ok"

    return app
"""


@pytest.mark.parametrize("key", ["dev", "", "ChangeMe", "  secret ", b"dev", None])
def test_a_flask_app_signing_with_a_placeholder_key_is_refused(fake_app, capsys, monkeypatch, key):
    monkeypatch.setenv("WSGIPROBE_APP", f"{MODULE}:create_app()")
    fake_app(f"KEY = {key!r}\n" + FLASK_APP)
    assert canary.main([]) == canary.EXIT_FAILED
    out, err = capsys.readouterr()
    assert "secret_key is" in err and "FLASK_SECRET_KEY" in err
    assert "answered" not in out + err  # refused before any request


def test_a_placeholder_key_passes_when_the_user_allows_it(fake_app, capsys, monkeypatch):
    monkeypatch.setenv("WSGIPROBE_APP", f"{MODULE}:create_app()")
    fake_app("KEY = 'dev'\n" + FLASK_APP)
    assert canary.main(["--allow-weak-secret-key"]) == canary.EXIT_OK
    assert "GET /healthz answered 200" in capsys.readouterr().out


def test_a_flask_app_with_a_real_key_passes(fake_app, capsys, monkeypatch):
    monkeypatch.setenv("WSGIPROBE_APP", f"{MODULE}:create_app()")
    fake_app("KEY = 'q8Vd0w3dmJZb2GkT9xYpLr4sNc7eUa1h'\n" + FLASK_APP)
    assert canary.main([]) == canary.EXIT_OK
    assert "GET /healthz answered 200" in capsys.readouterr().out
