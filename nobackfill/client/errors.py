"""Typed exceptions for the service's one error shape: `{"error", "detail", "field"?, "errors"?}`."""

from __future__ import annotations

from typing import Any


class NobackfillError(Exception):
    """A request the service answered with an error status.

    `field` names the offending part of the request (a dotted path into the body such as
    `items[3].vector`, or a parameter), `detail` says what is wrong, `errors` lists every
    validation problem when there were several."""

    def __init__(self, status: int, code: str, detail: str, field: str | None = None,
                 errors: list[dict[str, Any]] | None = None, retry_after: float | None = None) -> None:
        where = f" ({field})" if field else ""
        super().__init__(f"HTTP {status} {code}{where}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.errors = errors or []
        self.retry_after = retry_after


class InvalidRequest(NobackfillError):
    """422 (and 400): the request is malformed; nothing was written."""


class AuthError(NobackfillError):
    """401 / 403: no valid key, or a key that may not do this."""


class NotFoundError(NobackfillError):
    """404: a model, collection, item, upgrade, job or session that does not exist."""


class ConflictError(NobackfillError):
    """409: refused by the current state (e.g. a name taken, too few pairs to train)."""


class TooLargeError(NobackfillError):
    """413: a body, batch or payload over the service's limits."""


class UnsupportedMediaTypeError(NobackfillError):
    """415: the body was not sent as JSON."""


class RateLimitedError(NobackfillError):
    """429: too many failed authentications; `retry_after` seconds until the next try counts."""


class UnavailableError(NobackfillError):
    """503: indexes still loading, or the index engine unreachable; retried by the client."""


class ServerError(NobackfillError):
    """Any other 5xx."""


_BY_STATUS: dict[int, type[NobackfillError]] = {
    400: InvalidRequest, 401: AuthError, 403: AuthError, 404: NotFoundError, 409: ConflictError,
    413: TooLargeError, 415: UnsupportedMediaTypeError, 422: InvalidRequest, 429: RateLimitedError,
    503: UnavailableError,
}


def error_for(status: int, body: Any, retry_after: float | None) -> NobackfillError:
    """The exception for an error response; a body that is not the service's shape still becomes one."""
    if not isinstance(body, dict):
        body = {"detail": str(body)[:500]}
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else NobackfillError)
    return cls(status, str(body.get("error", "error")), str(body.get("detail", "")), body.get("field"),
               body.get("errors"), retry_after)
