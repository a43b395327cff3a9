"""The captcha API: create, image, verify, oracle (routes under /api/captchas)."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, request, url_for

from . import captchas, payloads
from .config import RateLimit
from .errors import ApiError
from .state import current

bp = Blueprint("api", __name__, url_prefix="/api/captchas")

ORACLE_HEADER = "X-Captcha-Oracle"


def _unknown() -> ApiError:
    return ApiError(404, "unknown_captcha", "This captcha does not exist, expired or was used.")


def _known_id(captcha_id: str) -> str:
    # A malformed id cannot exist: answer like an unknown one, without asking the store.
    if not captchas.is_valid_id(captcha_id):
        raise _unknown()
    return captcha_id


def _oracle_ok() -> bool:
    secret = current().settings.oracle_secret
    given = request.headers.get(ORACLE_HEADER)
    return (
        bool(secret) and given is not None and hmac.compare_digest(given.encode(), secret.encode())
    )


def _rate_limit(bucket: str, limit: RateLimit) -> None:
    client = request.remote_addr or "unknown"
    allowed, retry_after = current().store.hit(bucket, client, limit.count, limit.seconds)
    if not allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"Too many requests; try again in {retry_after} s.",
            {"Retry-After": str(retry_after)},
        )


@bp.post("")
def create() -> tuple[dict[str, Any], int]:
    payloads.no_fields()
    state = current()
    oracle = _oracle_ok()
    if not oracle:
        _rate_limit("create", state.settings.rate_limit_create)
    captcha_id = captchas.new_id()
    answer = captchas.new_answer(state.settings.captcha_length)
    state.store.put(captcha_id, answer, state.settings.captcha_ttl)
    state.store.incr("issued")
    body: dict[str, Any] = {
        "id": captcha_id,
        "image_url": url_for("api.image", captcha_id=captcha_id),
        "verify_url": url_for("api.verify", captcha_id=captcha_id),
        "expires_in": state.settings.captcha_ttl,
    }
    if oracle:
        body["answer"] = answer
    return body, 201


@bp.get("/<captcha_id>/image.png")
def image(captcha_id: str) -> Response:
    # Hot path (benchmarked against the bare library): one store read, one render.
    state = current()
    answer = state.store.peek(_known_id(captcha_id))
    if answer is None:
        raise _unknown()
    return Response(captchas.render_png(answer), mimetype="image/png")


@bp.post("/<captcha_id>/verify")
def verify(captcha_id: str) -> dict[str, bool]:
    given = payloads.answer_field()  # bad input is refused before the store is touched
    _known_id(captcha_id)
    state = current()
    if not _oracle_ok():
        _rate_limit("verify", state.settings.rate_limit_verify)
    expected = state.store.take(captcha_id)  # one-time: gone from here on, right or wrong
    if expected is None:
        raise _unknown()
    valid = captchas.answers_match(given, expected)
    state.store.incr("verified" if valid else "rejected")
    return {"valid": valid}


@bp.get("/<captcha_id>/oracle")
def oracle(captcha_id: str) -> dict[str, str]:
    state = current()
    if not state.settings.oracle_secret:
        raise ApiError(404, "not_found", "There is nothing at this URL.")
    if not _oracle_ok():
        raise ApiError(403, "forbidden", f"A valid {ORACLE_HEADER} header is required.")
    answer = state.store.peek(_known_id(captcha_id))
    if answer is None:
        raise _unknown()
    return {"answer": answer}
