"""Bad input: a 4xx JSON error with its code, and nothing changed in the store."""

import pytest

from captcha_testlib import new_captcha, store_of

VERIFY_CASES = [
    ({"json": {}}, 400, "missing_field"),
    ({"json": {"answr": "ABCDE"}}, 400, "missing_field"),
    ({"json": {"answer": "ABCDE", "extra": 1}}, 400, "unexpected_fields"),
    ({"json": {"answer": 12345}}, 400, "invalid_answer"),
    ({"json": {"answer": None}}, 400, "invalid_answer"),
    ({"json": {"answer": ["ABCDE"]}}, 400, "invalid_answer"),
    ({"json": {"answer": ""}}, 400, "invalid_answer"),
    ({"json": {"answer": "A" * 33}}, 400, "invalid_answer"),
    ({"json": {"answer": "ÄBCDE"}}, 400, "invalid_answer"),
    ({"json": {"answer": "AB\nDE"}}, 400, "invalid_answer"),
    ({"json": {"answer": "AB\x00DE"}}, 400, "invalid_answer"),
    ({"json": ["ABCDE"]}, 400, "malformed_json"),
    ({"json": "ABCDE"}, 400, "malformed_json"),
    ({"data": b'{"answer": ', "content_type": "application/json"}, 400, "malformed_json"),
    ({"data": b"", "content_type": "application/json"}, 400, "malformed_json"),
    ({"data": b"\xff\xfe{}", "content_type": "application/json"}, 400, "malformed_json"),
    ({"data": b"[" * 10000, "content_type": "application/json"}, 400, "malformed_json"),
    ({"data": b'{"answer": "ABCDE"}', "content_type": "text/plain"}, 415, "unsupported_media_type"),
    ({"data": b"answer=ABCDE"}, 415, "unsupported_media_type"),
    ({"data": {"answer": "ABCDE"}}, 415, "unsupported_media_type"),  # a form
    ({}, 415, "unsupported_media_type"),
]
CREATE_CASES = [
    ({"json": {"answer": "ABCDE"}}, 400, "unexpected_fields"),
    ({"json": {"length": 3}}, 400, "unexpected_fields"),
    ({"json": []}, 400, "malformed_json"),
    ({"data": b"null", "content_type": "application/json"}, 400, "malformed_json"),
    ({"data": b"{", "content_type": "application/json"}, 400, "malformed_json"),
    ({"data": b"{}", "content_type": "text/plain"}, 415, "unsupported_media_type"),
    ({"data": {"x": "1"}}, 415, "unsupported_media_type"),
]


def assert_error(response, status, code):
    assert response.status_code == status
    body = response.get_json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) == {"error", "message"}
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(("kwargs", "status", "code"), VERIFY_CASES)
def test_bad_verify_body_changes_nothing(client, kwargs, status, code):
    captcha_id, answer = new_captcha(client)
    store = store_of(client.application)
    before = store.counters()
    response = client.post(f"/api/captchas/{captcha_id}/verify", **kwargs)
    assert_error(response, status, code)
    assert store.counters() == before
    assert store.peek(captcha_id) == answer
    ok = client.post(f"/api/captchas/{captcha_id}/verify", json={"answer": answer})
    assert ok.get_json() == {"valid": True}


def test_bad_verify_bodies_do_not_count_against_the_rate_limit(make_app):
    client = make_app(RATE_LIMIT_VERIFY="1/3600").test_client()
    captcha_id, answer = new_captcha(client)
    for _ in range(3):
        assert client.post(f"/api/captchas/{captcha_id}/verify", json={}).status_code == 400
    ok = client.post(f"/api/captchas/{captcha_id}/verify", json={"answer": answer})
    assert ok.get_json() == {"valid": True}


@pytest.mark.parametrize(("kwargs", "status", "code"), CREATE_CASES)
def test_bad_create_body_changes_nothing(client, kwargs, status, code):
    store = store_of(client.application)
    before = store.counters()
    assert_error(client.post("/api/captchas", **kwargs), status, code)
    assert store.counters() == before


def test_oversized_body_is_413_json(make_app):
    client = make_app(MAX_CONTENT_LENGTH=1024).test_client()
    captcha_id, answer = new_captcha(client)
    padding = "x" * 2000
    response = client.post(
        f"/api/captchas/{captcha_id}/verify", json={"answer": answer, "pad": padding}
    )
    assert_error(response, 413, "payload_too_large")
    assert_error(client.post("/api/captchas", json={"pad": padding}), 413, "payload_too_large")
    assert store_of(client.application).peek(captcha_id) == answer


def test_default_limit_is_16_kib(client):
    response = client.post("/api/captchas", data=b" " * 16385, content_type="application/json")
    assert_error(response, 413, "payload_too_large")


def test_wrong_method_is_405_json_with_allow(client):
    response = client.get("/api/captchas")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]
    assert_error(client.get(f"/api/captchas/{'A' * 22}/verify"), 405, "method_not_allowed")
    assert_error(client.post("/healthz"), 405, "method_not_allowed")


@pytest.mark.parametrize("path", ["/nope", "/api/nope", "/api/captchas/x/y", "/api/captchas/"])
def test_unknown_path_is_404_json(client, path):
    assert_error(client.get(path), 404, "not_found")


def test_unexpected_exception_is_500_json(make_app):
    app = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret detail")

    response = app.test_client().get("/boom")
    assert_error(response, 500, "internal_error")
    assert b"secret detail" not in response.data
