"""A store that stops answering: 503 JSON (never 500), and recovery without a restart."""

import pytest

from captcha_testlib import ORACLE
from sample_app import create_app


def assert_unavailable(response):
    assert response.status_code == 503
    assert response.get_json()["error"] == "store_unavailable"
    assert response.headers["Cache-Control"] == "no-store"


def exercise_every_endpoint(client, captcha_id):
    oracle = {"X-Captcha-Oracle": ORACLE}
    assert_unavailable(client.post("/api/captchas"))
    assert_unavailable(client.post("/api/captchas", headers=oracle))
    assert_unavailable(client.get(f"/api/captchas/{captcha_id}/image.png"))
    assert_unavailable(client.post(f"/api/captchas/{captcha_id}/verify", json={"answer": "AB"}))
    assert_unavailable(client.get(f"/api/captchas/{captcha_id}/oracle", headers=oracle))
    assert_unavailable(client.get("/events"))
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.get_json()["status"] == "degraded"
    assert health.get_json()["store"] == "unavailable"


def make_client(url):
    app = create_app(
        {"SECRET_KEY": "t", "TESTING": True, "STORE_URL": url, "CAPTCHA_ORACLE_SECRET": ORACLE}
    )
    return app.test_client()


def test_healthz_when_the_store_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["store"] == "ok"
    assert body["version"]


def test_redis_down_then_back(own_redis_server):
    client = make_client(own_redis_server.url)
    created = client.post("/api/captchas").get_json()
    assert client.get("/healthz").status_code == 200

    own_redis_server.stop()
    exercise_every_endpoint(client, created["id"])

    own_redis_server.start()  # empty: nothing was saved
    assert client.get("/healthz").get_json()["store"] == "ok"
    again = client.post("/api/captchas")
    assert again.status_code == 201
    assert client.get(again.get_json()["image_url"]).status_code == 200


def test_sqlite_unreachable_then_back(tmp_path):
    folder = tmp_path / "later"
    client = make_client(f"sqlite:///{folder}/store.db")
    exercise_every_endpoint(client, "A" * 22)

    folder.mkdir()
    assert client.get("/healthz").status_code == 200
    created = client.post("/api/captchas")
    assert created.status_code == 201
    assert client.get(created.get_json()["image_url"]).status_code == 200


@pytest.mark.parametrize("url", ["unix:///nonexistent/redis.sock", "redis://127.0.0.1:1/0"])
def test_unreachable_redis_is_a_503_not_a_500(url):
    assert_unavailable(make_client(url).post("/api/captchas"))
