"""API-key checks as FastAPI dependencies.

Writes and admin calls need `Authorization: Bearer <key>` whenever `NOBACKFILL_API_KEY` is set;
reads and queries need it only when `NOBACKFILL_READ_REQUIRES_KEY` is true. Keys are compared in
constant time and never logged or echoed.
"""

from __future__ import annotations

import secrets

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="The service API key (NOBACKFILL_API_KEY).")


def _check(settings: Settings, creds: HTTPAuthorizationCredentials | None) -> None:
    expected = settings.api_key.get_secret_value() if settings.api_key else None
    if not expected:
        return
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not secrets.compare_digest(creds.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="API key not accepted")


async def require_admin(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    _check(request.app.state.settings, creds)


async def require_reader(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    settings: Settings = request.app.state.settings
    if settings.read_requires_key:
        _check(settings, creds)
