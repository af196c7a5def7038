"""The REST API over real HTTP, against SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import unique
from tests.helpers import b64, make_collection, make_model, upsert


def rand(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


@pytest.fixture
def gallery(client):
    """A model and a collection with 50 items whose payload records their index."""
    m, c = unique("m"), unique("c")
    make_model(client, m, 8)
    make_collection(client, c, m)
    x = rand(50, 8)
    r = upsert(client, c, m, [f"item-{i}" for i in range(50)], x, [{"i": i} for i in range(50)])
    assert r.status_code == 200, r.text
    return m, c, x


# ---- models --------------------------------------------------------------------------------------
def test_model_registration_and_lineage(client) -> None:
    v1, v2, v3 = unique("v1"), unique("v2"), unique("v3")
    out = make_model(client, v1, 384, description="MiniLM")
    assert out["metric"] == "cosine" and out["lineage"] == [v1] and out["successor_of"] is None
    make_model(client, v2, 768, successor_of=v1, metric="cosine")
    make_model(client, v3, 512, successor_of=v2)
    got = client.get(f"/v1/models/{v3}").json()
    assert got["successor_of"] == v2 and got["lineage"] == [v1, v2, v3] and got["dim"] == 512
    assert {v1, v2, v3} <= {m["name"] for m in client.get("/v1/models").json()}


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"name": "x", "dim": 0}, "dim", 422),
        ({"name": "bad name!", "dim": 4}, "name", 422),
        ({"name": "x", "dim": 4, "metric": "hamming"}, "metric", 422),
        ({"name": "x", "dim": 100_000}, "dim", 422),
        ({"name": "x", "dim": 4, "successor_of": "nope"}, "successor_of", 404),
        ({"name": "x", "dim": 4, "colour": "red"}, "colour", 422),
    ],
)
def test_bad_model_requests_name_the_field(client, body, field, status) -> None:
    r = client.post("/v1/models", json=body)
    assert r.status_code == status, r.text
    assert field in r.text
    assert client.get("/v1/models/x").status_code == 404


def test_duplicate_model_is_409(client) -> None:
    name = unique("dup")
    make_model(client, name, 4)
    r = client.post("/v1/models", json={"name": name, "dim": 4})
    assert r.status_code == 409 and r.json()["field"] == "name"


# ---- collections and items -----------------------------------------------------------------------
def test_collection_counts_and_item_round_trip(client, gallery) -> None:
    m, c, x = gallery
    info = client.get(f"/v1/collections/{c}").json()
    assert info["items"] == 50 and info["items_per_model"] == {m: 50} and info["model"] == m
    item = client.get(f"/v1/collections/{c}/items/item-7", params={"include_vector": True}).json()
    assert item["payload"] == {"i": 7} and item["model"] == m
    np.testing.assert_allclose(item["vector"], x[7], rtol=1e-6)
    assert c in {col["name"] for col in client.get("/v1/collections").json()}


def test_upsert_replaces_and_delete_removes(client, gallery) -> None:
    m, c, x = gallery
    r = upsert(client, c, m, ["item-3", "new-1"], x[[10, 11]] * 2, [{"v": 2}, None], compact=True)
    assert r.json() == {"model": m, "received": 2, "created": 1, "updated": 1, "kept": 0}
    hits = client.post(f"/v1/collections/{c}/query", json={"model": m, "vector": x[10].tolist(), "k": 3}).json()
    top_ids = [h["id"] for h in hits["hits"][:2]]
    assert set(top_ids) == {"item-10", "item-3"}, "item-3 now holds item-10's direction"
    assert client.delete(f"/v1/collections/{c}/items/item-3").status_code == 204
    assert client.get(f"/v1/collections/{c}/items/item-3").status_code == 404
    assert client.delete(f"/v1/collections/{c}/items/item-3").status_code == 404
    hits = client.post(f"/v1/collections/{c}/query", json={"model": m, "vector": x[10].tolist(), "k": 50}).json()
    ids = [h["id"] for h in hits["hits"]]
    assert "item-3" not in ids and len(ids) == len(set(ids)) == 50


def test_item_ids_with_slashes_and_unicode(client, gallery) -> None:
    m, c, x = gallery
    weird = "dir/sub/файл #1?.jpg"
    assert upsert(client, c, m, [weird], x[:1]).status_code == 200
    from urllib.parse import quote

    r = client.get(f"/v1/collections/{c}/items/{quote(weird)}")
    assert r.status_code == 200 and r.json()["id"] == weird


# ---- queries -------------------------------------------------------------------------------------
def test_query_returns_exact_neighbours_best_first(client, gallery) -> None:
    m, c, x = gallery
    q = x[5] + 0.01
    r = client.post(f"/v1/collections/{c}/query", json={"model": m, "vector": q.tolist(), "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = np.argsort(-(xn @ (q / np.linalg.norm(q))))[:5]
    assert [h["id"] for h in body["hits"]] == [f"item-{i}" for i in expected]
    assert body["hits"][0]["payload"] == {"i": 5} and body["hits"][0]["model"] == m
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0, abs=1e-3)
    assert body["searched"] == [{"model": m, "items": 50}] and body["skipped"] == []


def test_batch_and_compact_queries_agree_with_single(client, gallery) -> None:
    m, c, x = gallery
    url = f"/v1/collections/{c}/query"
    singles = [client.post(url, json={"model": m, "vector": x[i].tolist(), "k": 4}).json()["hits"] for i in range(3)]
    batch = client.post(url, json={"model": m, "vectors": x[:3].tolist(), "k": 4}).json()["results"]
    compact = client.post(url, json={"model": m, "vectors_b64": b64(x[:3]), "k": 4}).json()["results"]
    one_b64 = client.post(url, json={"model": m, "vector_b64": b64(x[0]), "k": 4}).json()["hits"]
    for i in range(3):
        assert [h["id"] for h in batch[i]["hits"]] == [h["id"] for h in singles[i]]
        assert [h["id"] for h in compact[i]["hits"]] == [h["id"] for h in singles[i]]
    assert [h["id"] for h in one_b64] == [h["id"] for h in singles[0]]
    lean = client.post(url, json={"model": m, "vector": x[0].tolist(), "k": 2, "include_payload": False}).json()
    assert all("payload" not in h for h in lean["hits"])


def test_k_larger_than_gallery_returns_everything(client, gallery) -> None:
    m, c, x = gallery
    r = client.post(f"/v1/collections/{c}/query", json={"model": m, "vector": x[0].tolist(), "k": 1000})
    assert len(r.json()["hits"]) == 50


def test_empty_collection_query_is_empty(client) -> None:
    m, c = unique("m"), unique("c")
    make_model(client, m, 3)
    make_collection(client, c, m)
    r = client.post(f"/v1/collections/{c}/query", json={"model": m, "vector": [1, 0, 0]})
    assert r.status_code == 200 and r.json()["hits"] == []


def test_query_in_successor_without_path_is_409(client, gallery) -> None:
    m, c, _ = gallery
    succ = unique("succ")
    make_model(client, succ, 6, successor_of=m)
    r = client.post(f"/v1/collections/{c}/query", json={"model": succ, "vector": [0.1] * 6})
    assert r.status_code == 409 and r.json()["field"] == "model"
    assert "no active transformation" in r.json()["detail"]


def test_collection_shows_each_partitions_index_state(client, live) -> None:
    """An IVF partition is exact until ivf_train_min vectors, then trains in the background; the
    collection says which structure is searched and whether a rebuild is running. (Milvus indexes
    each segment by itself: the structure is IVF from the start, `rebuilding` while rows wait.)"""
    import time

    def settled() -> dict:
        deadline = time.monotonic() + 30
        while (part := client.get(f"/v1/collections/{c}").json()["partitions"][0])["rebuilding"]:
            assert time.monotonic() < deadline, "IVF training did not finish"
            time.sleep(0.05)
        return part

    m, c = unique("ivfm"), unique("ivfc")
    make_model(client, m, 8)
    make_collection(client, c, m, index={"kind": "ivf", "ivf_train_min": 100, "ivf_nlist": 4})
    assert upsert(client, c, m, [f"a{i}" for i in range(50)], rand(50, 8), compact=True).status_code == 200
    small = "exact" if live.settings.index_backend == "faiss" else "ivf"
    assert settled() == {"model": m, "vectors": 50, "structure": small, "rebuilding": False}
    assert upsert(client, c, m, [f"b{i}" for i in range(200)], rand(200, 8, seed=1), compact=True).status_code == 200
    assert settled() == {"model": m, "vectors": 250, "structure": "ivf", "rebuilding": False}


def test_quantised_ivf_collections_are_created_queried_or_refused_by_field(client, live) -> None:
    """sq8 lists on both backends (FAISS IVFScalarQuantizer, Milvus IVF_SQ8); pq on FAISS only
    (Milvus Lite has no IVF_PQ); an encoding on a kind without lists is refused, naming the field."""
    m = unique("sq8m")
    make_model(client, m, 8)
    c = unique("sq8c")
    made = make_collection(client, c, m, index={"kind": "ivf", "ivf_train_min": 100, "ivf_nlist": 4,
                                                "ivf_encoding": "sq8"})
    assert made["index"]["ivf_encoding"] == "sq8" and made["index"]["ivf_pq_sub_dim"] == 4
    x = rand(300, 8, seed=4)
    assert upsert(client, c, m, [f"v{i}" for i in range(300)], x, compact=True).status_code == 200
    hits = client.post(f"/v1/collections/{c}/query", json={"model": m, "vector": x[7].tolist(), "k": 3}).json()["hits"]
    assert hits[0]["id"] == "v7"
    wrong = client.post("/v1/collections", json={"name": unique("hq"), "model": m,
                                                 "index": {"kind": "hnsw", "ivf_encoding": "sq8"}})
    assert wrong.status_code == 422 and wrong.json()["field"] == "index.ivf_encoding"
    assert "needs kind 'ivf'" in wrong.json()["detail"]
    name = unique("pqc")
    pq = client.post("/v1/collections", json={"name": name, "model": m, "index": {"kind": "ivf", "ivf_encoding": "pq"}})
    if live.settings.index_backend == "milvus":
        assert pq.status_code == 422 and pq.json()["field"] == "index.ivf_encoding"
        assert "IVF_PQ" in pq.json()["detail"]
        assert client.get(f"/v1/collections/{name}").status_code == 404  # nothing was created
    else:
        assert pq.status_code == 201 and pq.json()["index"]["ivf_encoding"] == "pq"


def test_mixed_gallery_reports_skipped_partitions(client, gallery) -> None:
    m, c, x = gallery
    succ = unique("succ")
    make_model(client, succ, 6, successor_of=m)
    kept = upsert(client, c, succ, ["item-0"], rand(1, 6))  # a re-embedding: keeps the old vector
    assert kept.json()["kept"] == 1
    dropped = upsert(client, c, succ, ["item-1"], rand(1, 6), previous_vectors="drop")  # new content
    assert dropped.json()["kept"] == 0
    info = client.get(f"/v1/collections/{c}").json()
    assert info["items_per_model"] == {m: 48, succ: 2} and info["kept_per_model"] == {m: 1}
    assert {p["model"]: p["vectors"] for p in info["partitions"]} == {m: 49, succ: 2}
    body = client.post(f"/v1/collections/{c}/query", json={"model": m, "vector": x[0].tolist(), "k": 50}).json()
    assert body["searched"] == [{"model": m, "items": 49}]
    assert body["skipped"][0]["model"] == succ and body["skipped"][0]["items"] == 2
    hits = {h["id"]: h for h in body["hits"]}
    assert hits["item-0"]["model"] == m  # still served to old clients from its kept vector
    assert "item-1" not in hits  # its old vector described content that no longer exists
    own = client.post(f"/v1/collections/{c}/query", json={"model": succ, "vector": [0.1] * 6, "k": 5}).json()
    assert {h["id"] for h in own["hits"]} == {"item-0", "item-1"}


# ---- bad input -----------------------------------------------------------------------------------
def _count(client, c) -> int:
    return client.get(f"/v1/collections/{c}").json()["items"]


@pytest.mark.parametrize(
    ("items", "field", "message"),
    [
        ([{"id": "a", "vector": [1.0] * 7}], "items[0].vector", "dimension 7"),
        ([{"id": "a", "vector": [1.0] * 8}, {"id": "b", "vector": [1.0] * 9}], "items[1].vector", "dimension 9"),
        ([{"id": "a", "vector": [1.0] * 7 + [float("nan")]}], "items[0].vector", "NaN"),
        ([{"id": "a", "vector": [1.0] * 7 + [float("inf")]}], "items[0].vector", "NaN or infinity"),
        ([], "items", "at least one"),
        ([{"id": "a", "vector": [1.0] * 8}, {"id": "a", "vector": [1.0] * 8}], "items[1].id", "twice"),
        ([{"id": "a", "vector_b64": "***"}], "items[0].vector_b64", "base64"),
        ([{"id": "a", "vector_b64": "AAAAAAA="}], "items[0].vector_b64", "float32"),
        ([{"id": "a", "vector": [1.0] * 8, "vector_b64": "AAAA"}], "items[0]", "exactly one"),
        ([{"id": "", "vector": [1.0] * 8}], "items[0].id", ""),
    ],
)
def test_bad_items_are_rejected_and_nothing_is_written(client, gallery, items, field, message) -> None:
    m, c, _ = gallery
    import json

    # NaN/inf are not JSON: send them the way Python's json module writes them
    r = client.post(f"/v1/collections/{c}/items", content=json.dumps({"model": m, "items": items}),
                    headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    body = r.json()
    assert field in (body.get("field") or body["detail"]), body
    assert message in body["detail"], body
    assert _count(client, c) == 50


def test_unknown_names_and_lineage(client, gallery) -> None:
    m, c, x = gallery
    r = upsert(client, unique("nope"), m, ["a"], x[:1])
    assert r.status_code == 404 and r.json()["field"] == "collection"
    r = upsert(client, c, "nope-model", ["a"], x[:1])
    assert r.status_code == 404 and r.json()["field"] == "model"
    stranger = unique("stranger")
    make_model(client, stranger, 8)
    r = upsert(client, c, stranger, ["a"], x[:1])
    assert r.status_code == 422 and "lineage" in r.json()["detail"]
    r = client.post(f"/v1/collections/{c}/query", json={"model": stranger, "vector": x[0].tolist()})
    assert r.status_code == 422 and "lineage" in r.json()["detail"]
    r = client.post("/v1/collections", json={"name": unique("c"), "model": "nope"})
    assert r.status_code == 404
    assert _count(client, c) == 50


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"vector": [1.0] * 8, "k": 0}, "k"),
        ({"vector": [1.0] * 8, "k": 1001}, "k"),
        ({"vector": [1.0] * 3}, "vector"),
        ({"vectors": [[1.0] * 8, [1.0] * 7]}, "vectors[1]"),
        ({"vectors": []}, "vectors"),
        ({"vectors_b64": "AAAA"}, "vectors_b64"),
        ({"vector_b64": "@@"}, "vector_b64"),
        ({}, "exactly one"),
        ({"vector": [1.0] * 8, "vectors": [[1.0] * 8]}, "exactly one"),
    ],
)
def test_bad_queries(client, gallery, extra, field) -> None:
    m, c, _ = gallery
    r = client.post(f"/v1/collections/{c}/query", json={"model": m, **extra})
    assert r.status_code == 422, r.text
    body = r.json()
    assert field in (body.get("field") or "") + body["detail"], body


def test_oversized_requests_are_413(client, gallery) -> None:
    m, c, _ = gallery
    big = {"model": m, "items": [{"id": f"i{i}", "vector": [0.123456789] * 8} for i in range(20_000)]}
    import json

    r = client.post(f"/v1/collections/{c}/items", content=json.dumps(big), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"

    def chunks():
        yield b'{"model": "x", "items": ['
        for _ in range(6000):  # ~2.6 MB, streamed without a Content-Length
            yield b'{"id": "a", "vector": [' + b"0.1," * 100 + b"0.1]},"
        yield b"]}"

    r = client.post(f"/v1/collections/{c}/items", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post(f"/v1/collections/{c}/query", json={"model": m, "vectors": [[0.1] * 8] * 1100})
    assert r.status_code == 413 and r.json()["field"] == "vectors"
    assert _count(client, c) == 50


def test_malformed_json_is_422(client, gallery) -> None:
    _, c, _ = gallery
    r = client.post(f"/v1/collections/{c}/items", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "body" and "JSON" in r.json()["detail"]
    r = client.post(f"/v1/collections/{c}/query", content=b"", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_health_and_openapi(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and ready["checks"] == {"database": "ok", "indexes": "ok"}
    spec = client.get("/openapi.json").json()
    assert "/v1/collections/{name}/query" in spec["paths"]
    assert client.get("/docs").status_code == 200
    # the query is served by a plain Starlette route placed first (collections.query_fast); other
    # methods on its path still get FastAPI's answer
    assert client.get("/v1/collections/x/query").status_code == 405
    # bodies parsed from raw bytes are still documented, nested models included
    query_body = spec["paths"]["/v1/collections/{name}/query"]["post"]["requestBody"]
    assert query_body["content"]["application/json"]["schema"]["$ref"].endswith("/QueryRequest")
    schemas = spec["components"]["schemas"]
    assert {"QueryRequest", "UpsertRequest", "ItemIn"} <= set(schemas)
    assert "k" in schemas["QueryRequest"]["properties"]


def test_cached_hits_follow_payload_updates_and_deletes(client, gallery) -> None:
    m, c, x = gallery
    body = {"model": m, "vector": x[5].tolist(), "k": 1}
    assert client.post(f"/v1/collections/{c}/query", json=body).json()["hits"][0]["payload"] == {"i": 5}  # cached now
    assert upsert(client, c, m, ["item-5"], x[5:6], [{"i": "changed"}]).status_code == 200
    assert client.post(f"/v1/collections/{c}/query", json=body).json()["hits"][0]["payload"] == {"i": "changed"}
    assert client.delete(f"/v1/collections/{c}/items/item-5").status_code == 204
    assert client.post(f"/v1/collections/{c}/query", json=body).json()["hits"][0]["id"] != "item-5"
