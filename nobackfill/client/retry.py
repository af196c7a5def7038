"""When the client retries, and how long it waits.

Retried: 429 and 503 (the service asks to come back; `Retry-After` is honoured up to `max_wait`),
a connection that could not be opened (nothing was sent), and -- only for idempotent calls -- a
connection that broke after the request went out (the first attempt may have been applied, and a
second application must change nothing). Everything else is raised at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

RETRY_STATUSES = frozenset({429, 503})
# Raised before any byte of the request reached the server: always safe to retry.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The request may have been applied: retried only when sending it twice equals sending it once.
MAYBE_SENT = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadTimeout, httpx.WriteTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries in all, the first included
    backoff: float = 0.2  # seconds before the second try; doubles each time, with +-50 % jitter
    max_wait: float = 10.0  # cap on one wait, Retry-After included

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number `attempt` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_wait)
        base = self.backoff * 2 ** (attempt - 1)
        return min(base * random.uniform(0.5, 1.5), self.max_wait)

    def retries_error(self, exc: Exception, idempotent: bool) -> bool:
        return isinstance(exc, NOT_SENT) or (idempotent and isinstance(exc, MAYBE_SENT))


NO_RETRY = RetryPolicy(attempts=1)


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: fall back to backoff
