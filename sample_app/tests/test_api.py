"""The captcha API as the contract describes it, on both backends."""

import hmac
import io
import time

import pytest
from PIL import Image

from captcha_testlib import ORACLE, new_captcha, store_of
from sample_app import captchas


def verify(client, captcha_id, answer, **kwargs):
    return client.post(f"/api/captchas/{captcha_id}/verify", json={"answer": answer}, **kwargs)


def test_create_returns_the_contract_fields(client):
    response = client.post("/api/captchas")
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"id", "image_url", "verify_url", "expires_in"}
    assert len(body["id"]) == 22 and captchas.is_valid_id(body["id"])
    assert body["image_url"] == f"/api/captchas/{body['id']}/image.png"
    assert body["verify_url"] == f"/api/captchas/{body['id']}/verify"
    assert body["expires_in"] == 300
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"json": {}},
        {"data": b"", "content_type": "text/plain"},
        {"data": b" { } ", "content_type": "application/json"},
    ],
    ids=["no body", "empty object", "empty text body", "object with spaces"],
)
def test_create_accepts_an_empty_body_or_object(client, kwargs):
    assert client.post("/api/captchas", **kwargs).status_code == 201


def test_answers_use_the_length_and_the_unambiguous_alphabet(make_app):
    app = make_app(CAPTCHA_LENGTH=8)
    client = app.test_client()
    answers = [new_captcha(client)[1] for _ in range(30)]
    assert all(len(answer) == 8 for answer in answers)
    assert not set("".join(answers)) & set("0O1IL")
    assert set("".join(answers)) <= set(captchas.ALPHABET)


def test_create_counts_issued(client):
    client.post("/api/captchas")
    client.post("/api/captchas")
    assert store_of(client.application).counters()["issued"] == 2


def test_image_is_a_png_and_does_not_consume(client):
    captcha_id, answer = new_captcha(client)
    for _ in range(2):
        response = client.get(f"/api/captchas/{captcha_id}/image.png")
        assert response.status_code == 200
        assert response.mimetype == "image/png"
        assert response.headers["Cache-Control"] == "no-store"
        assert Image.open(io.BytesIO(response.data)).size == (160, 60)
    assert verify(client, captcha_id, answer).get_json() == {"valid": True}


@pytest.mark.parametrize("captcha_id", ["A" * 22, "short", "A" * 23, "bad.chars.here.xxxxxxx"])
def test_image_of_unknown_or_malformed_id_is_404(client, captcha_id):
    response = client.get(f"/api/captchas/{captcha_id}/image.png")
    assert response.status_code == 404
    assert response.get_json()["error"] == "unknown_captcha"


def test_right_answer_is_valid_once(client):
    captcha_id, answer = new_captcha(client)
    response = verify(client, captcha_id, answer)
    assert response.status_code == 200
    assert response.get_json() == {"valid": True}
    assert response.headers["Cache-Control"] == "no-store"
    again = verify(client, captcha_id, answer)
    assert again.status_code == 404
    assert again.get_json()["error"] == "unknown_captcha"
    assert client.get(f"/api/captchas/{captcha_id}/image.png").status_code == 404


def test_wrong_answer_uses_the_captcha_up(client):
    captcha_id, answer = new_captcha(client)
    wrong = "".join("A" if c != "A" else "B" for c in answer)
    assert verify(client, captcha_id, wrong).get_json() == {"valid": False}
    assert verify(client, captcha_id, answer).status_code == 404


def test_answers_compare_case_insensitively(client):
    captcha_id, answer = new_captcha(client)
    assert verify(client, captcha_id, answer.lower()).get_json() == {"valid": True}


def test_comparison_uses_compare_digest(client, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    captcha_id, answer = new_captcha(client)
    assert verify(client, captcha_id, answer.lower()).get_json() == {"valid": True}
    assert (answer.encode(), answer.encode()) in calls


def test_verify_counts_verified_and_rejected(client):
    for valid in (True, False, False):
        captcha_id, answer = new_captcha(client)
        verify(client, captcha_id, answer if valid else "WRONG1")
    counters = store_of(client.application).counters()
    assert counters == {"issued": 3, "verified": 1, "rejected": 2}


def test_captchas_expire(make_app):
    client = make_app(CAPTCHA_TTL=1).test_client()
    first, answer = new_captcha(client)
    second, _ = new_captcha(client)
    assert client.post("/api/captchas").get_json()["expires_in"] == 1
    time.sleep(1.1)
    assert client.get(f"/api/captchas/{first}/image.png").status_code == 404
    response = verify(client, second, answer)
    assert response.status_code == 404
    assert response.get_json()["error"] == "unknown_captcha"


def test_verify_of_malformed_id_is_404(client):
    response = verify(client, "not-an-id", "ABCDE")
    assert response.status_code == 404
    assert response.get_json()["error"] == "unknown_captcha"


def test_oracle_returns_the_answer_without_consuming(client):
    captcha_id, answer = new_captcha(client)
    response = client.get(
        f"/api/captchas/{captcha_id}/oracle", headers={"X-Captcha-Oracle": ORACLE}
    )
    assert response.status_code == 200
    assert response.get_json() == {"answer": answer}
    assert verify(client, captcha_id, answer).get_json() == {"valid": True}


def test_create_with_the_oracle_header_includes_the_answer(client):
    response = client.post("/api/captchas", headers={"X-Captcha-Oracle": ORACLE})
    body = response.get_json()
    assert body["answer"] == store_of(client.application).peek(body["id"])


@pytest.mark.parametrize("headers", [{}, {"X-Captcha-Oracle": "wrong"}, {"X-Captcha-Oracle": ""}])
def test_oracle_without_the_right_secret_is_forbidden(client, headers):
    captcha_id, _ = new_captcha(client)
    response = client.get(f"/api/captchas/{captcha_id}/oracle", headers=headers)
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"
    assert "answer" not in client.post("/api/captchas", headers=headers).get_json()


def test_oracle_compares_with_compare_digest(client, monkeypatch):
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    captcha_id, _ = new_captcha(client)
    client.get(f"/api/captchas/{captcha_id}/oracle", headers={"X-Captcha-Oracle": "guess"})
    assert (b"guess", ORACLE.encode()) in calls


def test_oracle_of_unknown_captcha_is_404(client):
    response = client.get(f"/api/captchas/{'A' * 22}/oracle", headers={"X-Captcha-Oracle": ORACLE})
    assert response.status_code == 404
    assert response.get_json()["error"] == "unknown_captcha"


def test_oracle_is_off_by_default(make_app):
    client = make_app().test_client()
    captcha_id, _ = new_captcha(client)
    for headers in ({}, {"X-Captcha-Oracle": ""}, {"X-Captcha-Oracle": "anything"}):
        response = client.get(f"/api/captchas/{captcha_id}/oracle", headers=headers)
        assert response.status_code == 404
        assert response.get_json()["error"] == "not_found"
        assert "answer" not in client.post("/api/captchas", headers=headers).get_json()
