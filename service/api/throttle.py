"""Throttling of authentication failures: brute-forcing a key through the login form or the
Authorization header gets 429 with `Retry-After` long before it gets anywhere.

Only *failures* count, in a moving window (the `limits` library): per client address for both
the login form and bearer keys, and overall for the login form. Once a limit is reached, attempts
are refused *before* the key is compared, so a throttled attacker learns nothing, not even with the
right key. The overall limit applies to the login form only: a flood from many addresses can close
the dashboard's login for a minute, never the API (callers with the right key keep working, and an
attacker's own address is shut out by the per-client limit).

The window lives in the process (MemoryStorage): with N replicas an address gets N times the
per-client budget, still a few dozen tries a minute against keys that should be long and random.
Client addresses are the socket peer's; behind a reverse proxy run uvicorn with
`--proxy-headers --forwarded-allow-ips=<proxy>` so that this is the real client.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from service.core.errors import ApiError


class TooManyAttempts(ApiError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed authentication attempts; retry in {retry_after} s", None)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class AuthThrottle:
    def __init__(self, per_client: str, login_overall: str) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_client: list[RateLimitItem] = parse_many(per_client)
        self._overall: list[RateLimitItem] = parse_many(login_overall)

    def _limits(self, client: str, login: bool) -> list[tuple[RateLimitItem, tuple[str, ...]]]:
        checks = [(item, ("client", client)) for item in self._per_client]
        if login:
            checks += [(item, ("login-overall",)) for item in self._overall]
        return checks

    def check(self, client: str, *, login: bool) -> None:
        """Raise TooManyAttempts when this client (or, for logins, everyone) is over a limit."""
        waits = [self._retry_after(item, ids) for item, ids in self._limits(client, login)
                 if not self._limiter.test(item, *ids)]
        if waits:
            raise TooManyAttempts(max(waits))

    def failed(self, client: str, *, login: bool) -> None:
        for item, ids in self._limits(client, login):
            self._limiter.hit(item, *ids)

    def _retry_after(self, item: RateLimitItem, ids: tuple[str, ...]) -> int:
        reset = self._limiter.get_window_stats(item, *ids).reset_time
        return max(1, math.ceil(reset - time.time()))
