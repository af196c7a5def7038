"""Who is calling: API keys (Authorization: Bearer) and dashboard session cookies.

Writes and admin calls need the admin key (`NOBACKFILL_API_KEY`) whenever one is set; reads and
queries need a key only when `NOBACKFILL_READ_REQUIRES_KEY` is true, and then the optional read-only
key (`NOBACKFILL_READ_API_KEY`) is enough. The dashboard logs in with either key and gets a signed,
HttpOnly, SameSite=Strict session cookie carrying only the role; cookie-authenticated writes must
also send the `X-Nobackfill-CSRF` header, which a cross-site form cannot. Keys are compared in
constant time and never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.deps import SettingsDep
from service.settings import Settings

bearer = HTTPBearer(auto_error=False, description="The service API key (NOBACKFILL_API_KEY).")
SESSION_COOKIE = "nobackfill_session"
CSRF_HEADER = "x-nobackfill-csrf"
ADMIN, READER = "admin", "reader"


def _secret(settings: Settings) -> bytes:
    """Session signing key, derived from the keys: rotating a key logs every session out."""
    material = "|".join(k.get_secret_value() for k in (settings.api_key, settings.read_api_key) if k)
    return hmac.new(material.encode(), b"nobackfill-dashboard-session", hashlib.sha256).digest()


def role_for_key(settings: Settings, key: str) -> str | None:
    for role, expected in ((ADMIN, settings.api_key), (READER, settings.read_api_key)):
        if expected and secrets.compare_digest(key.encode(), expected.get_secret_value().encode()):
            return role
    return None


def session_cookie(settings: Settings, role: str) -> str:
    expires = int(time.time() + settings.session_hours * 3600)
    body = f"{role}.{expires}"
    sig = hmac.new(_secret(settings), body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{sig}"


def session_role(settings: Settings, cookie: str | None) -> str | None:
    if not cookie or cookie.count(".") != 2:
        return None
    role, expires, sig = cookie.split(".")
    good = hmac.new(_secret(settings), f"{role}.{expires}".encode(), hashlib.sha256).hexdigest()
    if not secrets.compare_digest(sig.encode(), good.encode()) or not expires.isdigit() or int(expires) < time.time():
        return None
    return role if role in (ADMIN, READER) else None


def caller_role(request: Request, creds: HTTPAuthorizationCredentials | None, settings: Settings) -> str | None:
    """The caller's role from a bearer key or a session cookie; raises 401/403 for a bad key."""
    if not settings.api_key:
        return ADMIN  # open deployment: no keys configured
    if creds is not None:
        if creds.scheme.lower() != "bearer" or not creds.credentials:
            raise _missing()
        role = role_for_key(settings, creds.credentials)
        if role is None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="API key not accepted")
        return role
    role = session_role(settings, request.cookies.get(SESSION_COOKIE))
    if role is not None and request.method not in ("GET", "HEAD", "OPTIONS") and not request.headers.get(CSRF_HEADER):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"session writes need the {CSRF_HEADER} header")
    return role


def _missing() -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail="missing API key: send 'Authorization: Bearer <key>'",
                         headers={"WWW-Authenticate": "Bearer"})


async def require_admin(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                        settings: SettingsDep) -> None:
    role = caller_role(request, creds, settings)
    if role is None:
        raise _missing()
    if role != ADMIN:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this call needs the admin API key")


async def require_reader(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                         settings: SettingsDep) -> None:
    if not settings.read_requires_key:
        if creds is not None:
            caller_role(request, creds, settings)  # a wrong key is still an error, even where none is needed
        return
    if caller_role(request, creds, settings) is None:
        raise _missing()
