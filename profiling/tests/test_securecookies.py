from flask import Flask, session
from werkzeug.test import Client

from wsgiprobe.securecookies import SecureCookies, secure


def flask_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = "test"

    @app.get("/login")
    def login():
        session["user"] = "ada"
        response = app.make_response("ok")
        response.set_cookie("theme", "dark", secure=True)
        return response

    return app


def set_cookies(scheme: str) -> list[str]:
    client = Client(SecureCookies(flask_app()))
    return client.get("/login", base_url=f"{scheme}://example.test/").headers.getlist("Set-Cookie")


def test_over_https_every_cookie_is_secure_once():
    cookies = set_cookies("https")
    assert len(cookies) == 2
    for cookie in cookies:
        attributes = [part.strip().lower() for part in cookie.split(";")]
        assert attributes.count("secure") == 1, cookie


def test_over_plain_http_the_cookies_are_left_as_the_app_set_them():
    session_cookie, theme = sorted(set_cookies("http"))
    assert "secure" not in session_cookie.lower()
    assert "Secure" in theme


def test_an_attribute_that_only_contains_the_word_is_not_secure():
    assert secure("a=secure; Path=/") == "a=secure; Path=/; Secure"
    assert secure("a=b; secure") == "a=b; secure"
