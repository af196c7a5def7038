"""/v1/sessions: the dashboard logins that are live, and revoking them (admin only).

A revoked session stops working on its next request, on every replica (sessions are rows, not
signed cookies). Revoking all of them is the way to end every login without rotating the keys.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from service.api import deps
from service.api.auth import require_admin
from service.api.ids import SessionId
from service.api.schemas import SessionOut, SessionsRevoked
from service.core.errors import NotFound
from service.store import SessionRecord

router = APIRouter(prefix="/v1/sessions", tags=["sessions"], dependencies=[Depends(require_admin)])


def session_out(record: SessionRecord) -> SessionOut:
    return SessionOut(id=record.id, role=record.role, client=record.client, user_agent=record.user_agent,
                      created_at=record.created_at, expires_at=record.expires_at,
                      last_seen_at=record.last_seen_at, revoked_at=record.revoked_at)


@router.get("", response_model=list[SessionOut])
def list_sessions(store: deps.StoreDep,
                  include_ended: Annotated[bool, Query(description="Also list expired and revoked sessions.")] = False,
                  limit: Annotated[int, Query(ge=1, le=1_000)] = 200) -> list[SessionOut]:
    return [session_out(s) for s in store.list_sessions(include_ended=include_ended, limit=limit)]


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def revoke_session(session_id: SessionId, store: deps.StoreDep) -> Response:
    """Idempotent: revoking an ended session is a no-op; an unknown id is 404."""
    if store.get_session(session_id) is None:
        raise NotFound(f"unknown session {session_id}", "session_id")
    store.revoke_session(session_id=session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("", response_model=SessionsRevoked)
def revoke_all_sessions(store: deps.StoreDep) -> SessionsRevoked:
    return SessionsRevoked(revoked=store.revoke_all_sessions())
