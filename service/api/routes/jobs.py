"""/v1/jobs: state, progress, log tail and result of durable jobs; cancellation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from service.api import deps
from service.api.auth import require_admin, require_reader
from service.api.ids import JobId
from service.api.schemas import JobOut
from service.core.errors import NotFound
from service.store import JobRecord, Store

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def job_out(job: JobRecord) -> JobOut:
    return JobOut(
        id=job.id, kind=job.kind, subject=job.subject, state=job.state, progress=job.progress,
        message=job.message, params=job.params, result=job.result, error=job.error, log_tail=job.log[-4_000:],
        attempts=job.attempts, cancel_requested=job.cancel_requested, created_at=job.created_at,
        started_at=job.started_at, finished_at=job.finished_at, heartbeat_at=job.heartbeat_at,
    )


def _job(store: Store, job_id: int) -> JobRecord:
    job = store.get_job(job_id)
    if job is None:
        raise NotFound(f"unknown job {job_id}", "job_id")
    return job


@router.get("", response_model=list[JobOut], dependencies=[Depends(require_reader)])
def list_jobs(
    store: deps.StoreDep,
    state: Annotated[str | None, Query(pattern="^(queued|running|succeeded|failed|cancelled)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[JobOut]:
    return [job_out(j) for j in store.list_jobs(state=state, limit=limit)]


@router.get("/{job_id}", response_model=JobOut, dependencies=[Depends(require_reader)])
def get_job(job_id: JobId, store: deps.StoreDep) -> JobOut:
    return job_out(_job(store, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut, dependencies=[Depends(require_admin)])
def cancel_job(job_id: JobId, store: deps.StoreDep) -> JobOut:
    """Queued jobs are cancelled at once; running ones stop at their next progress report."""
    _job(store, job_id)
    return job_out(store.request_cancel(job_id))
