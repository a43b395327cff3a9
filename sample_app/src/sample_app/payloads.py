"""Strict parsing of request bodies and query parameters; every failure is a 4xx ApiError."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from .config import MAX_ANSWER_LENGTH
from .errors import ApiError

# A JSON number, as the OpenAPI document's `"type": "number"` promises: float() alone also takes
# "nan", "inf", "1_0" and spaces.
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def json_object(allow_empty: bool) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}`` when ``allow_empty``."""
    body = request.get_data(cache=True)  # raises 413 beyond MAX_CONTENT_LENGTH
    if not body and allow_empty:
        return {}
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: deeply nested arrays, which fit in the size limit.
        raise ApiError(400, "malformed_json", "The body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise ApiError(400, "malformed_json", "The body must be a JSON object.")
    return value


def no_fields() -> None:
    fields = json_object(allow_empty=True)
    if fields:
        raise _unexpected(fields)


def answer_field() -> str:
    """The ``answer`` of ``{"answer": "..."}``: 1 to 32 printable ASCII characters."""
    fields = json_object(allow_empty=False)
    if "answer" not in fields:
        raise ApiError(400, "missing_field", 'The body must be {"answer": "<the characters>"}.')
    extra = {k: v for k, v in fields.items() if k != "answer"}
    if extra:
        raise _unexpected(extra)
    answer = fields["answer"]
    if not (
        isinstance(answer, str)
        and 0 < len(answer) <= MAX_ANSWER_LENGTH
        and answer.isascii()
        and answer.isprintable()
    ):
        raise ApiError(
            400,
            "invalid_answer",
            f"The answer must be 1 to {MAX_ANSWER_LENGTH} printable ASCII characters.",
        )
    return answer


def _unexpected(fields: dict[str, Any]) -> ApiError:
    names = ", ".join(sorted(fields))[:200]
    return ApiError(400, "unexpected_fields", f"Unexpected fields in the body: {names}.")


def non_negative_number_arg(name: str) -> float | None:
    """The query parameter ``name`` as a number >= 0, given at most once; None when absent.

    A literal too large for a float reads as infinity: still a number >= 0, for callers that
    use it as an upper bound.
    """
    values = request.args.getlist(name)
    if not values:
        return None
    if len(values) == 1 and _NUMBER.fullmatch(values[0]):
        number = float(values[0])
        if number >= 0:
            return number
    raise ApiError(400, "invalid_parameter", f"{name} must be a number >= 0, given once.")
