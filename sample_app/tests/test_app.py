import pytest

from sample_app import create_app


@pytest.fixture
def client():
    return create_app({"SECRET_KEY": "test", "TESTING": True}).test_client()


def test_index_shows_the_page(client):
    response = client.get("/")
    assert response.status_code == 200
    assert b"<h1>Captcha service</h1>" in response.data
    assert b"/static/style.css" in response.data


def test_healthz_is_json(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_secret_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("FLASK_SECRET_KEY", "from-env")
    assert create_app().config["SECRET_KEY"] == "from-env"


def test_missing_secret_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("FLASK_SECRET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="FLASK_SECRET_KEY"):
        create_app()
