"""Strict input on every set-up: JSON bodies only (415 otherwise), JSON numbers only, no zero
vector under cosine, ids without control characters, bounded payloads that every database can
store, labels on all pairs or none -- each a clear 4xx naming the field, and nothing written."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.conftest import unique
from tests.helpers import make_collection, make_model, upsert


@pytest.fixture
def coll(client: httpx.Client) -> tuple[str, str]:
    model, name = unique("sm"), unique("sc")
    make_model(client, model, 4)
    make_collection(client, name, model)
    return model, name


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def items_of(client: httpx.Client, name: str) -> int:
    return client.get(f"/v1/collections/{name}").json()["items"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_declared_json_is_a_415(client, coll, content_type) -> None:
    model, name = coll
    body = b'{"model": "%s", "items": [{"id": "a", "vector": [1, 0, 0, 0]}]}' % model.encode()
    headers = {} if content_type is None else {"content-type": content_type}
    r = client.post(f"/v1/collections/{name}/items", content=body, headers=headers)
    assert r.status_code == 415, r.text
    assert r.json()["error"] == "unsupported_media_type" and "application/json" in r.json()["detail"]
    assert client.post("/v1/models", content=b'{"name": "x", "dim": 4}', headers=headers).status_code == 415
    assert items_of(client, name) == 0
    ok = client.post(f"/v1/collections/{name}/items", content=body,
                     headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("vector, field", [(["1", "0", "0", "0"], "items[0].vector[0]"),
                                           ([True, 0, 0, 0], "items[0].vector[0]")])
def test_vector_components_are_json_numbers(client, coll, vector, field) -> None:
    model, name = coll
    r = client.post(f"/v1/collections/{name}/items", json={"model": model, "items": [{"id": "a", "vector": vector}]})
    assert r.status_code == 422 and r.json()["field"] == field, r.text
    r = client.post("/v1/models", json={"name": unique("n"), "dim": "4"})
    assert r.status_code == 422 and r.json()["field"] == "dim"
    assert items_of(client, name) == 0


def test_zero_vectors_are_refused_under_cosine(client, coll) -> None:
    model, name = coll
    r = upsert(client, name, model, ["a", "b"], np.array([[1, 0, 0, 0], [0, 0, 0, 0]], np.float32))
    assert r.status_code == 422 and r.json()["field"] == "items[1].vector" and "zeros" in r.json()["detail"]
    r = upsert(client, name, model, ["a"], np.zeros((1, 4), np.float32), compact=True)
    assert r.status_code == 422 and r.json()["field"] == "items[0].vector_b64"
    assert items_of(client, name) == 0
    assert upsert(client, name, model, ["a"], np.ones((1, 4), np.float32)).status_code == 200
    zero_queries = (({"vector": [0, 0, 0, 0]}, "vector"), ({"vectors": [[1, 0, 0, 0], [0, 0, 0, 0]]}, "vectors[1]"))
    for body, field in zero_queries:
        r = client.post(f"/v1/collections/{name}/query", json={"model": model, **body})
        assert r.status_code == 422 and r.json()["field"] == field, r.text
    l2 = unique("l2")
    make_model(client, l2, 2, metric="l2")  # a zero vector is an ordinary point under l2
    make_collection(client, unique("lc"), l2)


@pytest.mark.parametrize("item_id, problem", [(" ", "whitespace"), ("\t\n", "whitespace"), ("a\x00b", "U+0000"),
                                              ("a\x1bb", "U+001B"), ("x\x7f", "U+007F"), ("", "at least 1")])
def test_ids_without_control_characters_or_only_whitespace(client, coll, item_id, problem) -> None:
    model, name = coll
    r = client.post(f"/v1/collections/{name}/items",
                    json={"model": model, "items": [{"id": item_id, "vector": [1, 0, 0, 0]}]})
    assert r.status_code == 422 and r.json()["field"] == "items[0].id" and problem in r.json()["detail"], r.text
    assert items_of(client, name) == 0


def test_ids_are_kept_exactly_as_sent(client, coll) -> None:
    model, name = coll
    ids = ["caf\u00e9", "cafe\u0301", " padded ", "a/b?c#d", "\U0001f600"]  # NFC and NFD are two ids
    assert upsert(client, name, model, ids, np.eye(5, 4, dtype=np.float32) + 0.1).status_code == 200
    assert items_of(client, name) == 5
    from urllib.parse import quote

    for item_id in ids:
        r = client.get(f"/v1/collections/{name}/items/{quote(item_id, safe='')}")
        assert r.status_code == 200 and r.json()["id"] == item_id


def test_a_lone_surrogate_is_named_as_such(client, coll) -> None:
    model, name = coll
    body = ('{"model": "' + model + '", "items": [{"id": "\\ud800", "vector": [1, 0, 0, 0]}]}').encode()
    r = client.post(f"/v1/collections/{name}/items", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "lone UTF-16 surrogate" in r.json()["detail"], r.text


def test_payloads_are_bounded_and_storable_everywhere(client, coll) -> None:
    model, name = coll
    big = {"text": "x" * (64 * 1024)}
    r = upsert(client, name, model, ["a"], np.ones((1, 4), np.float32), [big])
    assert r.status_code == 413 and r.json()["field"] == "items[0].payload"
    assert "MAX_PAYLOAD_BYTES" in r.json()["detail"]
    for payload, problem in (({"s": "a\x00b"}, "NUL"), ({"a\x00": 1}, "NUL"),
                             ({"deep": nested(40)}, "deeper")):
        r = upsert(client, name, model, ["a"], np.ones((1, 4), np.float32), [payload])
        assert r.status_code == 422 and problem in r.json()["detail"], r.text
    raw = ('{"model": "' + model + '", "items": [{"id": "a", "vector": [1, 0, 0, 0], "payload": {"x": NaN}}]}').encode()
    r = client.post(f"/v1/collections/{name}/items", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "non-finite" in r.json()["detail"], r.text
    assert items_of(client, name) == 0
    fine = {"text": "x" * 60_000, "nested": {"ok": [1, 2.5, None, True]}}
    assert upsert(client, name, model, ["a"], np.ones((1, 4), np.float32), [fine]).status_code == 200
    assert client.get(f"/v1/collections/{name}/items/a").json()["payload"] == fine


def test_labels_on_some_pairs_only_are_refused(client) -> None:
    old, new = unique("lo"), unique("ln")
    make_model(client, old, 4)
    make_model(client, new, 4, successor_of=old)
    uid = next(u["id"] for u in client.get("/v1/upgrades").json() if u["new_model"] == new)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(150, 4)).tolist()
    labelled = {"ids": [f"p{i}" for i in range(150)], "old_vectors": a, "new_vectors": a,
                "labels": [i % 3 for i in range(150)]}
    assert client.post(f"/v1/upgrades/{uid}/pairs", json=labelled).status_code == 200
    bare = {"ids": ["q0"], "old_vectors": a[:1], "new_vectors": a[:1]}
    r = client.post(f"/v1/upgrades/{uid}/pairs", json=bare)
    assert r.status_code == 422 and r.json()["field"] == "labels", r.text
    assert "150 of 151" in r.json()["detail"] and "uploaded pair 150 (id 'q0')" in r.json()["detail"]
    assert client.get(f"/v1/upgrades/{uid}").json()["pairs"]["uploaded"] == 150  # nothing written
    # replacing every labelled pair by unlabelled ones (same ids) is consistent, so it is accepted
    relabel = {**labelled, "labels": None}
    assert client.post(f"/v1/upgrades/{uid}/pairs", json=relabel).status_code == 200
    assert client.post(f"/v1/upgrades/{uid}/train", json={"method": "procrustes"}).status_code == 202
