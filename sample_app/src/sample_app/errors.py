"""Every error answers JSON ``{"error": code, "message": sentence}``, never an HTML page."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from .store import StoreUnavailable

# Codes for Flask's and Werkzeug's own errors; others are derived from the status name.
HTTP_CODES = {
    404: ("not_found", "There is nothing at this URL."),
    405: ("method_not_allowed", "This URL does not accept this method."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "Send the body as application/json."),
    500: ("internal_error", "The server failed to answer; the error is logged."),
}


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    response = jsonify(error=code, message=message)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return error_response(error.status, error.code, error.message, error.headers)

    @app.errorhandler(StoreUnavailable)
    def store_unavailable(error: StoreUnavailable) -> Response:
        app.logger.warning("store unavailable: %s", error)
        return error_response(
            503, "store_unavailable", "The captcha store is unavailable; try again shortly."
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        # Handles InternalServerError too: Flask wraps unhandled exceptions in it, after logging.
        status = error.code or 500
        default = ((error.name or "error").lower().replace(" ", "_"), error.description or "")
        code, message = HTTP_CODES.get(status, default)
        # Keep headers such as Allow (405); drop the HTML content type.
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        return error_response(status, code, message, headers)
