"""The Python client (nobackfill.client): the whole upgrade flow against live servers (sync and
async), typed errors carrying the service's field, and what is retried (a mock transport)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import numpy as np
import pytest

from nobackfill.client import (
    NO_RETRY,
    AsyncClient,
    Client,
    ConflictError,
    InvalidRequest,
    NotFoundError,
    RateLimitedError,
    RetryPolicy,
    UnavailableError,
    UnsupportedMediaTypeError,
)
from nobackfill.client.calls import Call
from nobackfill.client.sync import read_response
from tests.conftest import unique

FAST = RetryPolicy(attempts=4, backoff=0.001, max_wait=0.01)


def test_register_ingest_upgrade_query_with_the_sync_client(live) -> None:
    rng = np.random.default_rng(0)
    old, new, coll = unique("c1"), unique("c2"), unique("cg")
    topic = rng.integers(0, 10, size=400)
    content = (3 * rng.normal(size=(10, 8))[topic] + rng.normal(size=(400, 8))).astype(np.float32)
    latent = (content + 1.5 * rng.normal(size=(400, 8))).astype(np.float32)  # v1: a noisy view
    rotation = np.linalg.qr(rng.normal(size=(8, 8)))[0].astype(np.float32)
    sharp = (content + 0.1 * rng.normal(size=(400, 8))).astype(np.float32) @ rotation  # v2: a sharp one
    with Client(live.url, retry=FAST) as nb:
        nb.create_model(old, dim=8)
        nb.create_model(new, dim=8, successor_of=old)
        nb.create_collection(coll, old, index={"kind": "flat"})
        ids = [f"doc/{i} ü" for i in range(400)]  # ids with '/', spaces and Unicode travel intact
        totals = nb.upsert_many(coll, old, ids, latent, [{"n": i} for i in range(400)], batch_size=150)
        assert totals["received"] == 400 and totals["created"] == 400
        item = nb.item(coll, ids[7], include_vector=True)
        assert item["payload"] == {"n": 7} and np.allclose(item["vector"], latent[7])
        upgrade = nb.upgrade_for(old, new)
        nb.add_pairs(upgrade["id"], latent[:300], sharp[:300], ids=ids[:300], labels=topic[:300].tolist())
        job = nb.wait_for_job(nb.train(upgrade["id"], method="procrustes")["id"], timeout=120)
        assert job["state"] == "succeeded", job
        assert nb.upgrade(upgrade["id"])["active_transformation"] is not None
        result = nb.query(coll, new, sharp[:3], k=5)
        assert all(len(row) == 5 for row in result.ids)
        assert result.scores.shape == (3, 5) and result.searched[0]["route"] == [new, old]
        narrow = nb.query(coll, old, latent[9], k=1, filter={"field": "n", "range": {"lt": 10}})
        assert narrow.hits[0][0].id == ids[9] and narrow.filter["searches"] == 1  # the first search found it
        broad = nb.query(coll, old, latent[9], k=3, filter={"not": {"field": "n", "eq": 9}})
        assert ids[9] not in broad.ids[0] and len(broad.ids[0]) == 3 and broad.filter["plan"] == "post-filter"
        nb.delete(coll, ids[9])
        with pytest.raises(NotFoundError) as missing:
            nb.item(coll, ids[9])
        assert missing.value.field == "id" and missing.value.status == 404


def test_errors_carry_the_field_and_detail(live) -> None:
    with Client(live.url, retry=NO_RETRY) as nb:
        name = unique("ce")
        nb.create_model(name, dim=4)
        with pytest.raises(ConflictError):
            nb.create_model(name, dim=4)
        nb.create_collection(unique("cc"), name)
        with pytest.raises(InvalidRequest) as bad:
            nb.create_model(unique("cx"), dim=0)
        assert bad.value.field == "dim" and bad.value.errors and "greater than" in bad.value.detail
        with pytest.raises(NotFoundError) as unknown:
            nb.collection("no-such-collection")
        assert "no-such-collection" in unknown.value.detail
        r = nb.http.post("/v1/models", content=b'{"name": "x", "dim": 4}', headers={"content-type": "text/plain"})
        with pytest.raises(UnsupportedMediaTypeError):
            read_response(Call("POST", "/v1/models"), r)


def test_the_async_client_does_the_same_flow(live) -> None:
    async def flow() -> None:
        rng = np.random.default_rng(1)
        model, coll = unique("a1"), unique("ag")
        vectors = rng.normal(size=(500, 6)).astype(np.float32)
        async with AsyncClient(live.url, retry=FAST) as nb:
            await nb.create_model(model, dim=6)
            await nb.create_collection(coll, model)
            totals = await nb.upsert_many(coll, model, [f"a{i}" for i in range(500)], vectors, batch_size=100,
                                          concurrency=3)
            assert totals["created"] == 500
            result = await nb.query(coll, model, vectors[42], k=3)
            assert result.hits[0][0].id == "a42"
            assert (await nb.collection(coll))["items"] == 500

    asyncio.run(flow())


# ---- retries, with a scripted transport --------------------------------------------------------------
def scripted(answers: list) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handler), seen


OK = httpx.Response(200, json={"items": 3})


def test_503_and_429_are_retried_honouring_retry_after() -> None:
    transport, seen = scripted([httpx.Response(503, json={"error": "unavailable", "detail": "loading"}),
                                httpx.Response(429, headers={"Retry-After": "0"},
                                               json={"error": "too_many_requests", "detail": "slow down"}), OK])
    with Client("http://test", retry=FAST, transport=transport) as nb:
        assert nb.collection("g") == {"items": 3}
    assert len(seen) == 3
    transport, seen = scripted([httpx.Response(503, json={"error": "unavailable", "detail": "down"})])
    with Client("http://test", retry=FAST, transport=transport) as nb, pytest.raises(UnavailableError):
        nb.collection("g")
    assert len(seen) == FAST.attempts
    transport, _ = scripted([httpx.Response(429, headers={"Retry-After": "7"},
                                            json={"error": "too_many_requests", "detail": "x"})])
    with Client("http://test", retry=NO_RETRY, transport=transport) as nb, pytest.raises(RateLimitedError) as exc:
        nb.collection("g")
    assert exc.value.retry_after == 7.0


def test_a_broken_connection_is_retried_only_when_the_call_is_idempotent() -> None:
    refused = httpx.ConnectError("refused")
    transport, seen = scripted([refused, refused, httpx.Response(201, json={"name": "m"})])
    with Client("http://test", retry=FAST, transport=transport) as nb:  # nothing was sent: always safe
        assert nb.create_model("m", dim=4) == {"name": "m"}
    assert len(seen) == 3
    broken = httpx.ReadError("reset")
    transport, seen = scripted([broken, httpx.Response(201, json={"name": "m"})])
    with Client("http://test", retry=FAST, transport=transport) as nb, pytest.raises(httpx.ReadError):
        nb.create_model("m", dim=4)  # may have been applied: not repeated behind the caller's back
    assert len(seen) == 1
    transport, seen = scripted([broken, httpx.Response(200, json={"received": 1})])
    with Client("http://test", retry=FAST, transport=transport) as nb:  # an upsert by id is idempotent
        assert nb.upsert("g", "m", ["a"], np.ones((1, 4), np.float32))["received"] == 1
    assert len(seen) == 2
    body = seen[0].read()
    assert b'"vector_b64"' in body and b'"vector":' not in body  # base64 float32 on the wire


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(backoff=0.2, max_wait=1.0)
    delays = [policy.delay(a) for a in range(1, 7)]
    assert 0.1 <= delays[0] <= 0.3 and 0.2 <= delays[1] <= 0.6 and max(delays) <= 1.0
    assert policy.delay(1, retry_after=30) == 1.0


# ---- bulk upserts: batches in flight, order, failures (scripted transports) ----------------------------
class BulkServer:
    """Answers upsert batches after `delay` seconds, recording the order and how many overlapped;
    the batch whose first id is `fail_at` gets a 400."""

    def __init__(self, delay: float = 0.05, fail_at: str | None = None) -> None:
        self.delay, self.fail_at = delay, fail_at
        self.order: list[str] = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def _enter(self, request: httpx.Request) -> str:
        first = json.loads(request.read())["items"][0]["id"]
        with self._lock:
            self.order.append(first)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        return first

    def _leave(self, first: str) -> httpx.Response:
        with self._lock:
            self.in_flight -= 1
        if first == self.fail_at:
            return httpx.Response(400, json={"error": "invalid", "detail": "bad batch", "field": "items"})
        return httpx.Response(200, json={"received": 10, "created": 10, "updated": 0, "kept": 0})

    def handle(self, request: httpx.Request) -> httpx.Response:
        first = self._enter(request)
        time.sleep(self.delay)
        return self._leave(first)

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        first = self._enter(request)
        await asyncio.sleep(self.delay)
        return self._leave(first)


def bulk(server: BulkServer, ids: list[str], concurrency: int, use_async: bool) -> dict:
    vectors = np.zeros((len(ids), 4), dtype=np.float32)
    if not use_async:
        with Client("http://test", retry=NO_RETRY, transport=httpx.MockTransport(server.handle)) as nb:
            return nb.upsert_many("g", "m", ids, vectors, batch_size=10, concurrency=concurrency)

    async def run() -> dict:
        async with AsyncClient("http://test", retry=NO_RETRY,
                               transport=httpx.MockTransport(server.handle_async)) as nb:
            return await nb.upsert_many("g", "m", ids, vectors, batch_size=10, concurrency=concurrency)

    return asyncio.run(run())


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_bulk_upsert_keeps_batches_in_flight_and_sums_every_answer(use_async: bool) -> None:
    server = BulkServer()
    totals = bulk(server, [f"i{n}" for n in range(80)], concurrency=2, use_async=use_async)
    assert totals == {"received": 80, "created": 80, "updated": 0, "kept": 0}
    assert sorted(server.order) == sorted(f"i{n}" for n in range(0, 80, 10))
    assert server.most_in_flight == 2  # the next batch was sent while one was being stored
    one_at_a_time = BulkServer()
    bulk(one_at_a_time, [f"i{n}" for n in range(40)], concurrency=1, use_async=use_async)
    assert one_at_a_time.most_in_flight == 1


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_bulk_upsert_with_an_id_in_two_batches_sends_them_in_order(use_async: bool) -> None:
    server = BulkServer()
    ids = [f"i{n}" for n in range(50)] + ["i3"] + [f"j{n}" for n in range(9)]  # i3 again in the last batch
    bulk(server, ids, concurrency=4, use_async=use_async)
    assert server.most_in_flight == 1
    assert server.order == ["i0", "i10", "i20", "i30", "i40", "i3"]  # the last write of i3 lands last


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_bulk_upsert_sends_no_batch_after_a_failure(use_async: bool) -> None:
    server = BulkServer(fail_at="i10")
    with pytest.raises(InvalidRequest) as bad:
        bulk(server, [f"i{n}" for n in range(100)], concurrency=2, use_async=use_async)
    assert bad.value.field == "items"
    assert "i0" in server.order and "i10" in server.order
    assert len(server.order) <= 3  # the failed batch, the one before it and at most one in flight after it
    assert server.in_flight == 0  # nothing left running when the error is raised
    with pytest.raises(ValueError, match="concurrency"):
        bulk(BulkServer(), ["a"], concurrency=0, use_async=use_async)
