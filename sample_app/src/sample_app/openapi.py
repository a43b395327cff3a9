"""The OpenAPI 3.2 document of every route, served at /openapi.json.

3.2, not 3.1: it is the first to describe an event stream event by event (``itemSchema``).
A unit test checks that it and ``app.url_map`` name the same paths and methods; schemathesis
checks the app against it (sample_app/tests/test_openapi.py, tests/e2e/test_captcha.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint

from .api import ORACLE_HEADER
from .version import __version__

bp = Blueprint("openapi", __name__)

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*codes: int, descriptions: Mapping[int, str] | None = None) -> dict[str, Any]:
    """The JSON error responses ``codes``; ``descriptions`` overrides the usual ones."""
    text = {
        400: "Invalid request body (malformed_json, unexpected_fields, missing_field, "
        "invalid_answer)",
        403: "Missing or wrong oracle header (forbidden)",
        404: "Unknown, expired, used or malformed captcha id (unknown_captcha); "
        "for the oracle also not_found when it is off",
        413: "Body larger than MAX_CONTENT_LENGTH (payload_too_large)",
        415: "Body that is not application/json (unsupported_media_type)",
        429: "Rate limit reached (rate_limited); see Retry-After",
        503: "Store unavailable (store_unavailable)",
    } | dict(descriptions or {})
    responses = {str(code): _json(text[code], _ref("Error")) for code in codes}
    if 429 in codes:
        responses["429"]["headers"] = {
            "Retry-After": {
                "description": "Whole seconds until the rate-limit window ends (>= 1)",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return responses


ID_PARAM = {
    "name": "captcha_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"},
}
ORACLE_PARAM = {
    "name": ORACLE_HEADER,
    "in": "header",
    "required": False,
    "description": "The CAPTCHA_ORACLE_SECRET (load tests and browser tests only): adds the "
    "answer to the created captcha and lifts the rate limits",
    "schema": {"type": "string"},
}
SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    },
    "Captcha": {
        "type": "object",
        "required": ["id", "image_url", "verify_url", "expires_in"],
        "properties": {
            "id": {"type": "string"},
            "image_url": {"type": "string"},
            "verify_url": {"type": "string"},
            "expires_in": {"type": "integer", "description": "Seconds"},
            "answer": {"type": "string", "description": "Only with a valid oracle header"},
        },
    },
    "VerifyRequest": {
        "type": "object",
        "required": ["answer"],
        "additionalProperties": False,
        "properties": {
            "answer": {"type": "string", "minLength": 1, "maxLength": 32, "pattern": "^[ -~]+$"}
        },
    },
    "Stats": {
        "type": "object",
        "required": ["issued", "verified", "rejected"],
        "properties": {
            name: {"type": "integer", "minimum": 0} for name in ("issued", "verified", "rejected")
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "store", "version", "host"],
        "properties": {
            "status": {"enum": ["ok", "degraded"]},
            "store": {"enum": ["ok", "unavailable"]},
            "version": {"type": "string"},
            "host": {"type": "string", "description": "The app host that answered"},
        },
    },
}
# The follow-ups of a created captcha. None to verify: it uses the captcha up (a removal by POST),
# so a tester that follows links from one creation would read the image's 404 after it as a
# created resource lost (schemathesis' ensure_resource_availability).
CREATED_LINKS = {
    name: {"operationId": operation, "parameters": {"captcha_id": "$response.body#/id"}}
    for name, operation in (("image", "captchaImage"), ("oracle", "captchaOracle"))
}
PATHS: dict[str, Any] = {
    "/api/captchas": {
        "post": {
            "operationId": "createCaptcha",
            "summary": "Create a captcha",
            "parameters": [ORACLE_PARAM],
            "requestBody": {
                "required": False,
                "description": "Empty, or an empty JSON object",
                "content": {JSON: {"schema": {"type": "object", "maxProperties": 0}}},
            },
            "responses": {
                "201": {**_json("Created", _ref("Captcha")), "links": CREATED_LINKS},
                **_errors(400, 413, 415, 429, 503),
            },
        }
    },
    "/api/captchas/{captcha_id}/image.png": {
        "get": {
            "operationId": "captchaImage",
            "summary": "The captcha image (does not consume the captcha)",
            "parameters": [ID_PARAM],
            "responses": {
                "200": {"description": "PNG", "content": {"image/png": {}}},
                **_errors(404, 503),
            },
        }
    },
    "/api/captchas/{captcha_id}/verify": {
        "post": {
            "operationId": "verifyCaptcha",
            "summary": "Check an answer; the captcha is used up, right or wrong",
            "parameters": [ID_PARAM, ORACLE_PARAM],
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("VerifyRequest")}}},
            "responses": {
                "200": _json(
                    "Checked (case-insensitively)",
                    {
                        "type": "object",
                        "required": ["valid"],
                        "properties": {"valid": {"type": "boolean"}},
                    },
                ),
                **_errors(400, 404, 413, 415, 429, 503),
            },
        }
    },
    "/api/captchas/{captcha_id}/oracle": {
        "get": {
            "operationId": "captchaOracle",
            "summary": "The answer, for load tests (off unless CAPTCHA_ORACLE_SECRET is set)",
            "parameters": [ID_PARAM, {**ORACLE_PARAM, "required": True}],
            "responses": {
                "200": _json(
                    "The answer (does not consume the captcha)",
                    {"type": "object", "properties": {"answer": {"type": "string"}}},
                ),
                **_errors(403, 404, 503),
            },
        }
    },
    "/healthz": {
        "get": {
            "operationId": "health",
            "summary": "Liveness and store reachability",
            "responses": {
                "200": _json("Healthy", _ref("Health")),
                "503": _json("The store does not answer", _ref("Health")),
            },
        }
    },
    "/events": {
        "get": {
            "operationId": "events",
            "summary": "Server-Sent Events: `stats` with the counters, for a bounded time",
            "parameters": [
                {
                    "name": "max_seconds",
                    "in": "query",
                    "required": False,
                    "description": "Shortens the stream (never beyond EVENTS_MAX_SECONDS): a "
                    "JSON number >= 0, given once",
                    "schema": {"type": "number", "minimum": 0},
                }
            ],
            "responses": {
                "200": {
                    "description": "`retry: 2000` (no event), then a `stats` event at once and "
                    "every EVENTS_INTERVAL seconds until the stream ends; while the store does "
                    "not answer, a comment line instead",
                    "headers": {
                        "Cache-Control": {"schema": {"const": "no-cache"}, "required": True}
                    },
                    "content": {
                        "text/event-stream": {
                            "itemSchema": {
                                "type": "object",
                                "required": ["event", "data"],
                                "properties": {
                                    "event": {"const": "stats"},
                                    "data": {
                                        "type": "string",
                                        "contentMediaType": JSON,
                                        "contentSchema": _ref("Stats"),
                                    },
                                },
                            }
                        }
                    },
                },
                **_errors(
                    400,
                    429,
                    503,
                    descriptions={
                        400: "max_seconds is not one JSON number >= 0 (invalid_parameter)",
                        429: "Deployed: this client holds as many streams as nginx lets one "
                        "client hold (too_many_connections)",
                        503: "Store unavailable (store_unavailable); deployed, also the stream "
                        "pool holding all the streams it can (unavailable; see Retry-After)",
                    },
                ),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {"200": _json("OpenAPI 3.2", {"type": "object"})},
        }
    },
    "/": {
        "get": {
            "operationId": "page",
            "summary": "The web page",
            "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
        }
    },
}
DOCUMENT: dict[str, Any] = {
    "openapi": "3.2.0",
    "info": {"title": "sample_app captcha service", "version": __version__},
    "paths": PATHS,
    "components": {"schemas": SCHEMAS},
}


@bp.get("/openapi.json")
def openapi() -> dict[str, Any]:
    return DOCUMENT
