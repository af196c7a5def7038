"""Storage of durable jobs: create, claim (safely across processes), heartbeat, finish, recover.

Claiming is a compare-and-set on `state` ("queued" -> "running"), so two workers can never both
win a job; on PostgreSQL the candidate row is also picked with `FOR UPDATE SKIP LOCKED`, so
concurrent workers take different jobs instead of queueing on one row lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from service.store.tables import Job, utcnow

TERMINAL = ("succeeded", "failed", "cancelled")
LOG_TAIL_CHARS = 16_000


@dataclass(frozen=True)
class JobRecord:
    id: int
    kind: str
    subject: str | None
    state: str
    progress: float
    message: str
    params: dict
    result: dict | None
    error: str | None
    log: str
    attempts: int
    max_attempts: int
    cancel_requested: bool
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


def _job(row: Job) -> JobRecord:
    return JobRecord(row.id, row.kind, row.subject, row.state, row.progress, row.message, dict(row.params or {}),
                     row.result, row.error, row.log, row.attempts, row.max_attempts, row.cancel_requested,
                     row.worker, row.created_at, row.started_at, row.finished_at, row.heartbeat_at)


def _append_log(log: str, lines: Sequence[str]) -> str:
    if not lines:
        return log
    out = log + "".join(f"{line}\n" for line in lines)
    return out[-LOG_TAIL_CHARS:]


class JobStore:
    def create_job(self, kind: str, subject: str | None, params: dict, max_attempts: int = 2) -> JobRecord:
        with self._sessions.begin() as s:
            row = Job(kind=kind, subject=subject, state="queued", progress=0.0, message="queued", params=params,
                      log="", attempts=0, max_attempts=max_attempts, cancel_requested=False)
            s.add(row)
            s.flush()
            return _job(row)

    def get_job(self, job_id: int) -> JobRecord | None:
        with self._sessions() as s:
            row = s.get(Job, job_id)
            return _job(row) if row else None

    def list_jobs(self, subject: str | None = None, state: str | None = None, limit: int = 50) -> list[JobRecord]:
        query = select(Job).order_by(Job.id.desc()).limit(limit)
        if subject is not None:
            query = query.where(Job.subject == subject)
        if state is not None:
            query = query.where(Job.state == state)
        with self._sessions() as s:
            return [_job(r) for r in s.scalars(query)]

    def job_counts(self) -> dict[str, int]:
        with self._sessions() as s:
            return {state: int(n) for state, n in s.execute(select(Job.state, func.count()).group_by(Job.state))}

    def claim_job(self, worker: str, kinds: Sequence[str]) -> JobRecord | None:
        """Take the oldest queued job of the given kinds, or None."""
        now = utcnow()
        with self._sessions.begin() as s:
            candidate = s.scalar(
                select(Job.id).where(Job.state == "queued", Job.kind.in_(list(kinds)))
                .order_by(Job.id).limit(1).with_for_update(skip_locked=True)
            )
            if candidate is None:
                return None
            won = s.execute(
                update(Job).where(Job.id == candidate, Job.state == "queued").values(
                    state="running", worker=worker, attempts=Job.attempts + 1, started_at=now, heartbeat_at=now,
                    message="started", progress=0.0)
            ).rowcount
            if not won:
                return None
            return _job(s.get(Job, candidate))

    def heartbeat(
        self, job_id: int, worker: str, progress: float, message: str, log_lines: Sequence[str] = ()
    ) -> str:
        """Record progress; return "cancel" when cancellation was requested, "lost" when this worker no
        longer owns the job (it was recovered by someone else), else "ok"."""
        with self._sessions.begin() as s:
            row = s.get(Job, job_id, with_for_update=True)
            if row is None or row.state != "running" or row.worker != worker:
                return "lost"
            row.progress = max(0.0, min(1.0, float(progress)))
            row.message = message[:2_000]
            row.heartbeat_at = utcnow()
            row.log = _append_log(row.log, log_lines)
            return "cancel" if row.cancel_requested else "ok"

    def finish_job(
        self, job_id: int, worker: str, state: str, result: dict | None = None, error: str | None = None,
        log_lines: Sequence[str] = (),
    ) -> bool:
        """Move an owned running job to a terminal state; False when this worker no longer owns it."""
        assert state in TERMINAL
        with self._sessions.begin() as s:
            row = s.get(Job, job_id, with_for_update=True)
            if row is None or row.state != "running" or row.worker != worker:
                return False
            row.state = state
            row.result = result
            row.error = error
            row.finished_at = utcnow()
            row.heartbeat_at = row.finished_at
            if state == "succeeded":
                row.progress = 1.0
            row.message = {"succeeded": "done", "failed": f"failed: {error or ''}"[:2_000],
                           "cancelled": "cancelled"}[state]
            row.log = _append_log(row.log, log_lines)
            return True

    def request_cancel(self, job_id: int) -> JobRecord | None:
        """Cancel a queued job at once; ask a running one to stop (its worker checks on heartbeat)."""
        with self._sessions.begin() as s:
            row = s.get(Job, job_id, with_for_update=True)
            if row is None:
                return None
            if row.state == "queued":
                row.state, row.message, row.finished_at = "cancelled", "cancelled before it started", utcnow()
            elif row.state == "running":
                row.cancel_requested = True
            return _job(row)

    def recover_jobs(self, stale_after: timedelta, dead_workers: Sequence[str] = ()) -> list[tuple[int, str]]:
        """Running jobs whose worker is gone -> queued again (or failed after max_attempts).

        A worker is gone when it is listed in `dead_workers` (same host, process not alive) or its
        heartbeat is older than `stale_after`. Returns (job id, new state) for each recovered job.
        """
        cutoff = utcnow() - stale_after
        out = []
        with self._sessions.begin() as s:
            rows = s.scalars(select(Job).where(Job.state == "running").with_for_update(skip_locked=True)).all()
            for row in rows:
                if row.worker not in dead_workers and (row.heartbeat_at is None or row.heartbeat_at > cutoff):
                    continue
                note = f"worker {row.worker} stopped while the job was running (attempt {row.attempts})"
                if row.attempts < row.max_attempts and not row.cancel_requested:
                    row.state, row.message, row.worker = "queued", f"re-queued: {note}", None
                else:
                    row.state, row.finished_at = "failed", utcnow()
                    row.error = row.message = f"interrupted: {note}"
                row.log = _append_log(row.log, [f"[recovery] {note}; now {row.state}"])
                out.append((row.id, row.state))
        return out
