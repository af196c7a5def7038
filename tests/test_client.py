"""The Python client (nobackfill.client): the whole upgrade flow against live servers (sync and
async), typed errors carrying the service's field, and what is retried (a mock transport)."""

from __future__ import annotations

import asyncio

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
