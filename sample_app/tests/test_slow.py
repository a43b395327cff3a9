"""GET /debug/slow: off by default (the route does not exist), capped when on."""

import pytest

from sample_app import create_app


@pytest.fixture
def config(tmp_path):
    return {"SECRET_KEY": "t", "STORE_URL": f"sqlite:///{tmp_path}/s.db"}


def test_off_by_default(config):
    app = create_app(config)
    assert "slow.slow" not in app.view_functions
    assert app.test_client().get("/debug/slow?seconds=0").status_code == 404


def test_on_it_sleeps_as_asked_within_the_limit(config):
    client = create_app({**config, "SLOW_ENDPOINT_MAX_SECONDS": 0.2}).test_client()
    body = client.get("/debug/slow?seconds=0.05").get_json()
    assert body["path"] == "/debug/slow" and body["seconds"] == 0.05
    assert body["elapsed"] >= 0.05
    assert body["url"] == "http://localhost/debug/slow?seconds=0.05"
    # Behind TLS the app server says https: so does the URL the app builds.
    https = client.get("/debug/slow?seconds=0", base_url="https://localhost").get_json()
    assert https["url"] == "https://localhost/debug/slow?seconds=0"
    capped = client.get("/debug/slow?seconds=100").get_json()
    assert capped["seconds"] == 0.2 and 0.2 <= capped["elapsed"] < 5
    assert client.get("/debug/slow?seconds=nan").get_json()["seconds"] == 0.0
    assert client.get("/debug/slow?seconds=-3").get_json()["seconds"] == 0.0


def test_a_bad_limit_is_a_config_error(config):
    with pytest.raises(ValueError, match="SLOW_ENDPOINT_MAX_SECONDS"):
        create_app({**config, "SLOW_ENDPOINT_MAX_SECONDS": "soon"})
