"""Durable jobs: a worker that claims queued jobs from the database and runs them.

The worker runs inside the service process by default (`NOBACKFILL_RUN_WORKER=true`); the same
class runs as a separate process with `nobackfill worker`. Safety comes from the store: claiming is
an atomic compare-and-set (plus SKIP LOCKED on PostgreSQL), progress is a heartbeat that also tells
the worker when it was cancelled or lost the job, and a job whose worker vanished (crash, kill -9)
is re-queued -- or failed after `max_attempts` -- at start-up (same host, process gone; see
`worker_identity`, which also catches a restart that reused the pid) or once its heartbeat is older
than `job_stale_seconds` (any host). No job stays "running" forever.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from service.core.worker_identity import is_dead_on_this_host, worker_name
from service.store import JobRecord, Store

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a job when cancellation was requested."""


class JobLost(Exception):
    """Raised inside a job when another worker recovered it (this worker was presumed dead)."""


@dataclass
class JobContext:
    """What a job handler sees: its record, and cheap progress/log calls (safe to call often)."""

    job: JobRecord
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _progress: float = 0.0
    _message: str = "started"
    _lines: list[str] = field(default_factory=list)
    _verdict: str = "ok"  # set by the heartbeat thread: ok | cancel | lost

    def progress(self, fraction: float, message: str) -> None:
        self.check()
        with self._lock:
            self._progress, self._message = fraction, message

    def log(self, line: str) -> None:
        log.info("job %s: %s", self.job.id, line)
        with self._lock:
            self._lines.append(f"{time.strftime('%H:%M:%S')} {line}")

    def check(self) -> None:
        if self._verdict == "cancel":
            raise JobCancelled()
        if self._verdict == "lost":
            raise JobLost()

    def drain(self) -> tuple[float, str, list[str]]:
        with self._lock:
            lines, self._lines = self._lines, []
            return self._progress, self._message, lines


Handler = Callable[[JobContext], dict]


class JobRunner:
    def __init__(
        self,
        store: Store,
        handlers: dict[str, Handler],
        *,
        poll_seconds: float = 1.0,
        heartbeat_seconds: float = 1.0,
        stale_seconds: float = 120.0,
    ) -> None:
        self.store = store
        self.handlers = handlers
        self.name = worker_name()
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_after = timedelta(seconds=stale_seconds)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="nobackfill-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def wake(self) -> None:
        """A job was queued: look now instead of at the next poll."""
        self._wake.set()

    def recover(self) -> list[tuple[int, str]]:
        running = self.store.list_jobs(state="running", limit=1_000)
        dead = [j.worker for j in running if is_dead_on_this_host(j.worker)]
        recovered = self.store.recover_jobs(self.stale_after, dead)
        for job_id, state in recovered:
            log.warning("job %s was interrupted (its worker stopped); now %s", job_id, state)
        return recovered

    # ---- running ------------------------------------------------------------------------------
    def _loop(self) -> None:
        last_recovery = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_recovery > self.stale_after.total_seconds() / 2:
                    self.recover()
                    last_recovery = time.monotonic()
                job = self.store.claim_job(self.name, list(self.handlers))
                if job is not None:
                    self.run(job)
                    continue
            except Exception:
                log.exception("job worker loop error; continuing")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def run(self, job: JobRecord) -> None:
        """Run one claimed job to a terminal state, heart-beating while it runs."""
        ctx = JobContext(job)
        ctx.log(f"started by {self.name} (attempt {job.attempts}/{job.max_attempts})")
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(ctx, done), name=f"job-{job.id}-heartbeat",
                                daemon=True)
        beat.start()
        state, result, error = "failed", None, None
        try:
            result = self.handlers[job.kind](ctx)
            state = "succeeded"
        except JobCancelled:
            state = "cancelled"
            ctx.log("cancelled on request")
        except JobLost:
            log.warning("job %s was taken over by another worker; abandoning", job.id)
            done.set()
            beat.join()
            return
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            ctx.log("failed: " + error)
            ctx.log(traceback.format_exc(limit=8).strip().replace("\n", " | "))
        done.set()
        beat.join()
        _, _, lines = ctx.drain()
        if not self.store.finish_job(job.id, self.name, state, result, error, lines):
            log.warning("job %s finished here but another worker owns it now; result dropped", job.id)

    def _heartbeat(self, ctx: JobContext, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_seconds):
            progress, message, lines = ctx.drain()
            try:
                ctx._verdict = self.store.heartbeat(ctx.job.id, self.name, progress, message, lines)
            except Exception:
                log.exception("heartbeat for job %s failed; will retry", ctx.job.id)
