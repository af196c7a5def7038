"""Storage of dashboard sessions: create at login, look up by token hash, revoke, list, purge."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine

from service.store.tables import DashboardSession, utcnow

TOUCH_EVERY = timedelta(seconds=60)  # last_seen is a hint for admins: one write a minute is plenty


@dataclass(frozen=True)
class SessionRecord:
    id: int
    role: str
    key_fingerprint: str
    client: str
    user_agent: str
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime
    revoked_at: datetime | None

    def live(self, now: datetime) -> bool:
        return self.revoked_at is None and self.expires_at > now


def _record(row) -> SessionRecord:
    """A result row of `select(DashboardSession)` as a record."""
    return SessionRecord(row.id, row.role, row.key_fingerprint, row.client, row.user_agent, row.created_at,
                         row.expires_at, row.last_seen_at, row.revoked_at)


class SessionStore:
    engine: Engine

    def create_session(self, token_hash: str, role: str, key_fingerprint: str, lifetime: timedelta,
                       client: str, user_agent: str) -> int:
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(delete(DashboardSession).where(DashboardSession.expires_at < now - timedelta(days=7)))
            return int(conn.execute(insert(DashboardSession).values(
                token_hash=token_hash, role=role, key_fingerprint=key_fingerprint, client=client[:64],
                user_agent=user_agent[:256], created_at=now, expires_at=now + lifetime, last_seen_at=now,
            ).returning(DashboardSession.id)).scalar_one())

    def live_session(self, token_hash: str) -> SessionRecord | None:
        """The session with this token when it is neither expired nor revoked (touches last_seen)."""
        now = utcnow()
        with self.engine.connect() as conn:
            row = conn.execute(select(DashboardSession).where(DashboardSession.token_hash == token_hash)).first()
        if row is None:
            return None
        record = _record(row)
        if not record.live(now):
            return None
        if now - record.last_seen_at > TOUCH_EVERY:
            with self.engine.begin() as conn:
                conn.execute(update(DashboardSession).where(DashboardSession.id == record.id).values(last_seen_at=now))
        return record

    def get_session(self, session_id: int) -> SessionRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(DashboardSession).where(DashboardSession.id == session_id)).first()
        return _record(row) if row is not None else None

    def revoke_session(self, session_id: int | None = None, token_hash: str | None = None) -> bool:
        """Revoke one session (by id or token hash); False when there was no live one."""
        where = (DashboardSession.id == session_id) if session_id is not None else (
            DashboardSession.token_hash == token_hash)
        with self.engine.begin() as conn:
            done = conn.execute(update(DashboardSession).where(where, DashboardSession.revoked_at.is_(None))
                                .values(revoked_at=utcnow()))
            return done.rowcount > 0

    def revoke_all_sessions(self) -> int:
        with self.engine.begin() as conn:
            return conn.execute(update(DashboardSession).where(DashboardSession.revoked_at.is_(None))
                                .values(revoked_at=utcnow())).rowcount

    def list_sessions(self, include_ended: bool = False, limit: int = 200) -> list[SessionRecord]:
        query = select(DashboardSession).order_by(DashboardSession.id.desc()).limit(limit)
        if not include_ended:
            query = query.where(DashboardSession.revoked_at.is_(None), DashboardSession.expires_at > utcnow())
        with self.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]
