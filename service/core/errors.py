"""Errors the application layer raises; the app turns them into JSON 4xx responses.

Every error names the offending field (dotted path into the request body) and the problem, so a
client can fix its request without reading server logs.
"""

from __future__ import annotations


class ApiError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def headers(self) -> dict[str, str] | None:
        """Response headers the error needs (e.g. Retry-After)."""
        return None

    def to_body(self) -> dict:
        body = {"error": self.code, "detail": self.message}
        if self.field:
            body["field"] = self.field
        return body


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class Invalid(ApiError):
    status_code = 422
    code = "invalid"


class TooLarge(ApiError):
    status_code = 413
    code = "too_large"


class UnsupportedMediaType(ApiError):
    status_code = 415
    code = "unsupported_media_type"


class Unavailable(ApiError):
    status_code = 503
    code = "unavailable"
