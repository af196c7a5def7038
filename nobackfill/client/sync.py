"""The blocking client: `Client(url, api_key)`; every endpoint of `Endpoints`, plus bulk upsert
with a progress bar and `wait_for_job`."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import httpx
import numpy as np

from nobackfill.client.batches import batch_bounds, in_flight, progress_bar, summed
from nobackfill.client.calls import TERMINAL_JOB_STATES, Call, Endpoints
from nobackfill.client.errors import error_for
from nobackfill.client.retry import RETRY_STATUSES, RetryPolicy, retry_after_seconds


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def read_response(call: Call, response: httpx.Response) -> Any:
    """The call's result for a 2xx answer, else the typed error."""
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        raise error_for(response.status_code, body, retry_after_seconds(response))
    return call.parse(response.json() if response.content else None)


class Client(Endpoints):
    """`with Client("http://127.0.0.1:8000", api_key=...) as nb: nb.query(...)`.

    One keep-alive connection pool; `retry` decides what is retried (see retry.py)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0,
                 retry: RetryPolicy | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.retry = retry or RetryPolicy()
        self.http = httpx.Client(base_url=url, headers=_headers(api_key), timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _send(self, call: Call) -> Any:
        for attempt in range(1, self.retry.attempts + 1):
            last = attempt == self.retry.attempts
            try:
                response = self.http.request(call.method, call.path, json=call.json, params=call.params)
            except httpx.TransportError as exc:
                if last or not self.retry.retries_error(exc, call.idempotent):
                    raise
                time.sleep(self.retry.delay(attempt))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                time.sleep(self.retry.delay(attempt, retry_after_seconds(response)))
                continue
            return read_response(call, response)
        raise AssertionError("unreachable")  # pragma: no cover

    def upsert_many(self, collection: str, model: str, ids: Sequence[str], vectors: np.ndarray,
                    payloads: Sequence[Mapping[str, Any] | None] | None = None, batch_size: int = 1_000,
                    previous_vectors: Literal["keep", "drop"] = "keep", progress: bool = False,
                    concurrency: int = 2) -> dict[str, int]:
        """Upsert any number of items in batches; totals of created / updated / kept.

        Up to `concurrency` batches are in flight at once, so the client prepares and sends the
        next batch while the service stores the last one (one at a time, in order, when an id
        appears in two batches). Each batch is all-or-nothing and durable once acknowledged. On a
        failure no further batch is sent; the batches before it are stored, and the up to
        `concurrency - 1` already in flight after it may be; the first failure is raised."""
        workers = in_flight(ids, concurrency)
        answers: list[dict[str, Any]] = []
        with progress_bar(progress, len(ids), f"upsert into {collection}") as advance, \
                ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nobackfill-upsert") as pool:

            def one(lo: int, hi: int) -> dict[str, Any]:
                chunk = None if payloads is None else payloads[lo:hi]
                answer = self._send(self.upsert_call(collection, model, ids[lo:hi], vectors[lo:hi], chunk,
                                                     previous_vectors))
                advance(hi - lo)
                return answer

            # On a failure, leaving the pool's block waits for the batches still in flight.
            pending: deque[Future[dict[str, Any]]] = deque()
            for lo, hi in batch_bounds(len(ids), batch_size):
                if len(pending) == workers:
                    answers.append(pending.popleft().result())
                pending.append(pool.submit(one, lo, hi))
            while pending:
                answers.append(pending.popleft().result())
        return summed(answers)

    def add_pairs_many(self, upgrade_id: int, old: np.ndarray, new: np.ndarray, ids: Sequence[str] | None = None,
                       labels: Sequence[str | int] | None = None, batch_size: int = 1_000,
                       progress: bool = False) -> list[dict[str, Any]]:
        answers = []
        with progress_bar(progress, len(old), f"pairs for upgrade {upgrade_id}") as advance:
            for lo, hi in batch_bounds(len(old), batch_size):
                answers.append(self._send(self.pairs_call(
                    upgrade_id, old[lo:hi], new[lo:hi], None if ids is None else ids[lo:hi],
                    None if labels is None else labels[lo:hi])))
                advance(hi - lo)
        return answers

    def wait_for_job(self, job_id: int, timeout: float = 3_600, interval: float = 0.2,
                     progress: bool = False) -> dict[str, Any]:
        """Poll the job until it ends; its final JSON (whatever the outcome: check `state`)."""
        deadline = time.monotonic() + timeout
        with progress_bar(progress, 1.0, f"job {job_id}") as advance:
            while True:
                job = self.job(job_id)
                advance(job["progress"], absolute=True)
                if job["state"] in TERMINAL_JOB_STATES:
                    return job
                if time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s: {job['message']}")
                time.sleep(interval)
