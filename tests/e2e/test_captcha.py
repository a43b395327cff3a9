"""The captcha service through nginx, under each app server: its flow and its rules."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RATE_WINDOW
from stack import ROOT, Stack, assert_unbuffered


def oracle() -> dict[str, str]:
    # Read after the first deploy has generated it.
    secret = (ROOT / "configs/local/.secrets/localvm/oracle_secret").read_text().strip()
    return {"X-Captcha-Oracle": secret}


def create(stack: Stack, headers: dict[str, str] | None = None) -> dict:
    response = stack.post_json("/api/captchas", {}, headers)
    assert response.status == 201, response.text
    return response.json()


@pytest.mark.every_release
def test_healthz_reports_the_store(deployed: Stack):
    body = deployed.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["store"] == "ok"


@pytest.mark.every_release
def test_flow_with_the_oracle_succeeds_once(deployed: Stack):
    captcha = create(deployed, oracle())
    image = deployed.get(captcha["image_url"])
    assert image.status == 200
    assert image.headers["Content-Type"] == "image/png"
    assert image.body.startswith(b"\x89PNG")
    # Case does not matter; the id is good for one verification only.
    verify = deployed.post_json(captcha["verify_url"], {"answer": captcha["answer"].lower()})
    assert (verify.status, verify.json()) == (200, {"valid": True})
    replay = deployed.post_json(captcha["verify_url"], {"answer": captcha["answer"]})
    assert replay.status == 404
    assert replay.json()["error"] == "unknown_captcha"


def test_answer_never_reaches_a_client_without_the_oracle(deployed: Stack):
    created = deployed.post_json("/api/captchas", {})
    captcha = created.json()
    answer = deployed.get(f"/api/captchas/{captcha['id']}/oracle", timeout=5)
    assert answer.status == 403
    real = deployed.request("GET", f"/api/captchas/{captcha['id']}/oracle", headers=oracle())
    secret = real.json()["answer"]
    for response in (created, deployed.get(captcha["image_url"]), deployed.get("/")):
        assert secret not in response.text
        assert all(secret not in value for value in response.headers.values())


def test_a_wrong_answer_also_uses_up_the_captcha(deployed: Stack):
    captcha = create(deployed, oracle())
    wrong = "Z" * len(captcha["answer"]) if captcha["answer"] != "Z" * 5 else "Y" * 5
    first = deployed.post_json(captcha["verify_url"], {"answer": wrong})
    assert (first.status, first.json()) == (200, {"valid": False})
    again = deployed.post_json(captcha["verify_url"], {"answer": captcha["answer"]})
    assert again.status == 404


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        (b"{not json", "application/json", 400, "malformed_json"),
        (b"{}", "application/json", 400, "missing_field"),
        (b'{"answer": "ABCDE", "extra": 1}', "application/json", 400, "unexpected_fields"),
        (b'{"answer": "' + b"A" * 33 + b'"}', "application/json", 400, "invalid_answer"),
        ('{"answer": "ÄBCDE"}'.encode(), "application/json", 400, "invalid_answer"),
        (b"answer=ABCDE", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
    ids=["malformed", "missing", "extra", "overlong", "non-ascii", "form"],
)
def test_bad_verify_requests_get_json_4xx_and_change_nothing(
    deployed: Stack, body, content_type, status, error
):
    captcha = create(deployed, oracle())
    response = deployed.request("POST", captcha["verify_url"], body, {"Content-Type": content_type})
    assert response.status == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"] == error
    # The captcha is untouched: it still verifies.
    still = deployed.post_json(captcha["verify_url"], {"answer": captcha["answer"]})
    assert still.json() == {"valid": True}


def test_unknown_ids_get_json_404(deployed: Stack):
    for path in ("/api/captchas/" + "x" * 22 + "/image.png", "/api/captchas/nope/image.png"):
        response = deployed.get(path)
        assert response.status == 404
        assert response.json()["error"] == "unknown_captcha"


def test_a_body_over_the_limit_is_refused_by_nginx_as_json(deployed: Stack):
    captcha = create(deployed, oracle())
    huge = b'{"answer": "' + b"A" * 20_000 + b'"}'
    response = deployed.request(
        "POST", captcha["verify_url"], huge, {"Content-Type": "application/json"}
    )
    assert response.status == 413
    assert response.json()["error"] == "payload_too_large"


@pytest.mark.every_release
def test_events_arrive_one_by_one_through_nginx(deployed: Stack):
    arrivals, events, ended = deployed.stream_events("/events?max_seconds=3")
    assert len(events) >= 3
    assert set(events[0]) >= {"issued", "verified", "rejected"}
    assert_unbuffered(arrivals, ended)


def test_create_is_rate_limited_per_client(deployed: Stack):
    statuses = [deployed.post_json("/api/captchas", {}) for _ in range(25)]
    limited = [r for r in statuses if r.status == 429]
    assert limited, [r.status for r in statuses]
    retry_after = int(limited[0].headers["Retry-After"])
    assert 1 <= retry_after <= RATE_WINDOW
    assert limited[0].json()["error"] == "rate_limited"
    # The oracle (load tests) is exempt.
    assert deployed.post_json("/api/captchas", {}, oracle()).status == 201
    # Leave the window as found, for the tests that follow.
    time.sleep(retry_after)
    assert deployed.post_json("/api/captchas", {}).status == 201


def test_the_service_keeps_to_its_openapi_document(deployed: Stack):
    # Every schemathesis check, through nginx, with the unit test's settings (bounded, and the
    # /events streams read to their first event). nginx's own errors are not in the app's
    # document: schemathesis' small, one-at-a-time requests stay within nginx's limits.
    run = subprocess.run(
        [
            *(str(Path(sys.executable).with_name("schemathesis")), "--config-file"),
            *(str(ROOT / "sample_app/tests/schemathesis.toml"), "run", "--no-color"),
            *("--tls-verify", str(deployed.ca_file)),
            f"{deployed.base_url}/openapi.json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert "✅ Stateful" in run.stdout, run.stdout[-8000:]  # the links were followed
    # It met the rate limits (documented 429s): leave the windows as found for the next tests.
    time.sleep(RATE_WINDOW)
