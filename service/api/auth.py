"""Who is calling: API keys (Authorization: Bearer) and dashboard sessions.

Writes and admin calls need the admin key (`NOBACKFILL_API_KEY`) whenever one is set; reads and
queries need a key only when `NOBACKFILL_READ_REQUIRES_KEY` is true, and then the optional read-only
key (`NOBACKFILL_READ_API_KEY`) is enough. Keys are compared in constant time and never logged or
echoed; failed attempts are throttled per client address (throttle.py).

The dashboard logs in with either key and gets a server-side session: the HttpOnly,
SameSite=Strict cookie holds a random token, the database holds its SHA-256 with the role, expiry
and a fingerprint of the keys. Logging out revokes the session at once, an admin can list and
revoke sessions (`/v1/sessions`), and rotating a key ends every session made under the old one.
Cookie-authenticated writes must also send the `X-Nobackfill-CSRF` header, which a cross-site form
cannot; the login form itself checks Origin / Referer (dashboard/views.py).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api import deps
from service.api.throttle import AuthThrottle
from service.settings import Settings
from service.store import Store

bearer = HTTPBearer(auto_error=False, description="The service API key (NOBACKFILL_API_KEY).")
SESSION_COOKIE = "nobackfill_session"
CSRF_HEADER = "x-nobackfill-csrf"
ADMIN, READER = "admin", "reader"


def key_fingerprint(settings: Settings) -> str:
    """A keyed digest of the configured keys: sessions record it, so rotating a key ends them."""
    material = "|".join(k.get_secret_value() for k in (settings.api_key, settings.read_api_key) if k)
    return hmac.new(material.encode(), b"nobackfill-dashboard-session", hashlib.sha256).hexdigest()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def role_for_key(settings: Settings, key: str) -> str | None:
    for role, expected in ((ADMIN, settings.api_key), (READER, settings.read_api_key)):
        if expected and secrets.compare_digest(key.encode(), expected.get_secret_value().encode()):
            return role
    return None


def open_session(settings: Settings, store: Store, role: str, request: Request) -> str:
    """Store a new session; the cookie value (a random token only this response ever carries)."""
    token = secrets.token_urlsafe(32)
    store.create_session(_token_hash(token), role, key_fingerprint(settings),
                         timedelta(hours=settings.session_hours), client_address(request),
                         request.headers.get("user-agent", ""))
    return token


def end_session(store: Store, cookie: str | None) -> None:
    if cookie:
        store.revoke_session(token_hash=_token_hash(cookie))


def session_role(settings: Settings, store: Store, cookie: str | None) -> str | None:
    """The role of a live session (not expired, not revoked, made under the current keys)."""
    if not cookie or len(cookie) > 128:
        return None
    record = store.live_session(_token_hash(cookie))
    if record is None or not secrets.compare_digest(record.key_fingerprint, key_fingerprint(settings)):
        return None
    return record.role if record.role in (ADMIN, READER) else None


async def caller_role(request: Request, creds: HTTPAuthorizationCredentials | None, settings: Settings,
                      store: Store, throttle: AuthThrottle) -> str | None:
    """The caller's role from a bearer key or a session cookie; raises 401/403 for a bad key and
    429 for a client that failed too often."""
    if not settings.api_key:
        return ADMIN  # open deployment: no keys configured
    if creds is not None:
        if creds.scheme.lower() != "bearer" or not creds.credentials:
            raise _missing()
        client = client_address(request)
        throttle.check(client, login=False)
        role = role_for_key(settings, creds.credentials)
        if role is None:
            throttle.failed(client, login=False)
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="API key not accepted")
        return role
    cookie = request.cookies.get(SESSION_COOKIE)
    role = await run_in_threadpool(session_role, settings, store, cookie) if cookie else None
    if role is not None and request.method not in ("GET", "HEAD", "OPTIONS") and not request.headers.get(CSRF_HEADER):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"session writes need the {CSRF_HEADER} header")
    return role


def _missing() -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail="missing API key: send 'Authorization: Bearer <key>'",
                         headers={"WWW-Authenticate": "Bearer"})


async def require_admin(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                        settings: deps.SettingsDep) -> None:
    role = await caller_role(request, creds, settings, await deps.store(request), await deps.throttle(request))
    if role is None:
        raise _missing()
    if role != ADMIN:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this call needs the admin API key")


async def require_reader(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                         settings: deps.SettingsDep) -> None:
    if not settings.read_requires_key and creds is None:
        return
    role = await caller_role(request, creds, settings, await deps.store(request), await deps.throttle(request))
    if role is None and settings.read_requires_key:
        raise _missing()
