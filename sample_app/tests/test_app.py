import socket

import pytest
from flask import Flask, session

from sample_app import create_app


@pytest.fixture
def sqlite_client(tmp_path):
    app = create_app({"SECRET_KEY": "test", "STORE_URL": f"sqlite:///{tmp_path}/s.db"})
    return app.test_client()


def test_index_shows_the_page(sqlite_client):
    response = sqlite_client.get("/")
    assert response.status_code == 200
    assert b"<h1>Captcha service</h1>" in response.data
    assert b"/static/style.css" in response.data
    assert b"/static/app.js" in response.data


@pytest.mark.parametrize(
    "element",
    [
        b'<img id="captcha-image"',
        b'<button id="refresh"',
        b'<input id="answer"',
        b'<button id="verify"',
        b'<p id="result"',
    ],
)
def test_page_has_the_elements_of_the_dom_contract(sqlite_client, element):
    assert element in sqlite_client.get("/").data


def test_page_loads_nothing_from_other_hosts(sqlite_client):
    html = sqlite_client.get("/").data
    script = sqlite_client.get("/static/app.js").data
    for text in (html, script):
        assert b"http://" not in text
        assert b"https://" not in text


def test_script_sets_the_attributes_of_the_dom_contract(sqlite_client):
    script = sqlite_client.get("/static/app.js").data
    assert b"dataset.captchaId" in script
    assert b'show("success", "Correct")' in script
    assert b"dataset.state" in script


def test_secret_key_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FLASK_SECRET_KEY", "from-env")
    monkeypatch.setenv("FLASK_STORE_URL", f"sqlite:///{tmp_path}/s.db")
    assert create_app().config["SECRET_KEY"] == "from-env"


def test_missing_secret_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("FLASK_SECRET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="FLASK_SECRET_KEY"):
        create_app()


def test_default_store_is_a_sqlite_file_in_the_instance_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("FLASK_STORE_URL", raising=False)
    monkeypatch.setattr(Flask, "auto_find_instance_path", lambda self: str(tmp_path / "i"))
    app = create_app({"SECRET_KEY": "test"})
    assert app.config["STORE_URL"] == f"sqlite:///{tmp_path}/i/sample_app.db"
    assert app.test_client().get("/healthz").status_code == 200
    assert (tmp_path / "i" / "sample_app.db").exists()


def test_sessions_still_work(tmp_path):
    # The app opens sessions lazily (only for requests with a session cookie).
    app = create_app({"SECRET_KEY": "test", "STORE_URL": f"sqlite:///{tmp_path}/s.db"})

    @app.get("/count")
    def count():
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    client = app.test_client()
    assert [client.get("/count").text for _ in range(3)] == ["1", "2", "3"]
    cookie = client.get_cookie("session")
    assert cookie.same_site == "Lax" and not cookie.secure


def test_healthz_names_the_host_that_answered(sqlite_client):
    # Behind a load balancer, tells which app host served the request.
    body = sqlite_client.get("/healthz").get_json()
    assert body["host"] == socket.gethostname()
