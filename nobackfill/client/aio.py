"""The asyncio client: `AsyncClient(url, api_key)`; the same endpoints as `Client`, awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import httpx
import numpy as np

from nobackfill.client.batches import batch_bounds, in_flight, progress_bar, summed
from nobackfill.client.calls import TERMINAL_JOB_STATES, Call, Endpoints
from nobackfill.client.retry import RETRY_STATUSES, RetryPolicy, retry_after_seconds
from nobackfill.client.sync import _headers, read_response


class AsyncClient(Endpoints):
    """`async with AsyncClient(url, api_key=...) as nb: await nb.query(...)`.

    Every `Endpoints` method returns an awaitable here. `upsert_many` sends up to `concurrency`
    batches at once (each one is durable when acknowledged)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0,
                 retry: RetryPolicy | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.retry = retry or RetryPolicy()
        self.http = httpx.AsyncClient(base_url=url, headers=_headers(api_key), timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def _send(self, call: Call) -> Any:  # type: ignore[override]
        for attempt in range(1, self.retry.attempts + 1):
            last = attempt == self.retry.attempts
            try:
                response = await self.http.request(call.method, call.path, json=call.json, params=call.params)
            except httpx.TransportError as exc:
                if last or not self.retry.retries_error(exc, call.idempotent):
                    raise
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                await asyncio.sleep(self.retry.delay(attempt, retry_after_seconds(response)))
                continue
            return read_response(call, response)
        raise AssertionError("unreachable")  # pragma: no cover

    async def upsert_many(self, collection: str, model: str, ids: Sequence[str], vectors: np.ndarray,
                          payloads: Sequence[Mapping[str, Any] | None] | None = None, batch_size: int = 1_000,
                          previous_vectors: Literal["keep", "drop"] = "keep", progress: bool = False,
                          concurrency: int = 2) -> dict[str, int]:
        """As `Client.upsert_many`: up to `concurrency` batches in flight (one at a time, in order,
        when an id appears in two batches)."""
        gate = asyncio.Semaphore(in_flight(ids, concurrency))
        failed = False
        with progress_bar(progress, len(ids), f"upsert into {collection}") as advance:

            async def one(lo: int, hi: int) -> dict[str, Any] | None:
                nonlocal failed
                async with gate:
                    if failed:  # no further batch after a failure
                        return None
                    chunk = None if payloads is None else payloads[lo:hi]
                    try:
                        answer = await self._send(self.upsert_call(collection, model, ids[lo:hi], vectors[lo:hi],
                                                                   chunk, previous_vectors))
                    except BaseException:
                        failed = True
                        raise
                    advance(hi - lo)
                    return answer

            results = await asyncio.gather(*(one(lo, hi) for lo, hi in batch_bounds(len(ids), batch_size)),
                                           return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return summed([result for result in results if result is not None])

    async def wait_for_job(self, job_id: int, timeout: float = 3_600, interval: float = 0.2,
                           progress: bool = False) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with progress_bar(progress, 1.0, f"job {job_id}") as advance:
            while True:
                job = await self.job(job_id)
                advance(job["progress"], absolute=True)
                if job["state"] in TERMINAL_JOB_STATES:
                    return job
                if time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s: {job['message']}")
                await asyncio.sleep(interval)
