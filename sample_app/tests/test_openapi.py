"""The OpenAPI document and the app describe the same routes, and the app keeps to it."""

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from sample_app import create_app

# The settings of every schemathesis run against the app, here and on the local VM.
SCHEMATHESIS_CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")

IMPLICIT = {"HEAD", "OPTIONS"}  # Flask adds them to every rule


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('openapi')}/s.db"
    return create_app({"SECRET_KEY": "t", "STORE_URL": url})


def app_routes(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        routes |= {(path, method.lower()) for method in rule.methods - IMPLICIT}
    return routes


def document_routes(document):
    return {(path, method) for path, item in document["paths"].items() for method in item}


@pytest.fixture(scope="module")
def document(app):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_it_is_openapi_3_2(document):
    assert document["openapi"].startswith("3.2")
    assert document["info"]["title"] and document["info"]["version"]


def test_every_route_is_documented(app, document):
    assert app_routes(app) - document_routes(document) == set()


def test_every_documented_route_exists(app, document):
    assert document_routes(document) - app_routes(app) == set()


def test_the_walk_sees_every_route(app):
    # Guard against a walk that finds nothing and so trivially agrees with the document.
    assert ("/api/captchas/{captcha_id}/verify", "post") in app_routes(app)
    assert len(app_routes(app)) == 8


def test_operations_document_responses_and_path_parameters(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (path, method)
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert names == set(re.findall(r"{([^}]+)}", path)), (path, method)


def test_error_codes_and_the_oracle_header_are_documented(document):
    verify = document["paths"]["/api/captchas/{captcha_id}/verify"]["post"]
    assert {"200", "400", "404", "413", "415", "429", "503"} <= set(verify["responses"])
    assert "Retry-After" in verify["responses"]["429"]["headers"]
    assert verify["requestBody"]["required"] is True
    oracle = document["paths"]["/api/captchas/{captcha_id}/oracle"]["get"]
    assert {"200", "403", "404"} <= set(oracle["responses"])
    assert any(
        p["name"] == "X-Captcha-Oracle" and p["in"] == "header" for p in oracle["parameters"]
    )
    create = document["paths"]["/api/captchas"]["post"]
    assert "201" in create["responses"]


def test_references_resolve(document):
    text = str(document)
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in document["components"]["schemas"]


def test_a_bad_max_seconds_is_documented(document):
    events = document["paths"]["/events"]["get"]
    assert {"200", "400", "503"} <= set(events["responses"])
    assert "max_seconds" in events["responses"]["400"]["description"]
    assert "itemSchema" in events["responses"]["200"]["content"]["text/event-stream"]


def test_the_app_keeps_to_its_document_by_every_schemathesis_check(app):
    # Deterministic (schemathesis.toml): a failure here fails the same way on the next run.
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        run = subprocess.run(
            [
                *(str(SCHEMATHESIS), "--config-file", str(SCHEMATHESIS_CONFIG), "run"),
                *(f"http://127.0.0.1:{server.server_port}/openapi.json", "--no-color"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.shutdown()
        thread.join()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "✅ Stateful" in run.stdout, run.stdout[-6000:]  # the links were followed
