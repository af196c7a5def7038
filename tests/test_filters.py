"""Payload filters: one meaning in Python and in SQL (both databases), filtered queries exact on
flat indexes and close to exact on HNSW through the pre- and post-filter plans, through a
mixed-version gallery, declared payload indexes that the database really uses, clear 422s."""

from __future__ import annotations

import random

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from service.store import Store, filters
from service.store.db import make_engine, migrate
from service.store.payload_filter import compile_filter
from tests.conftest import unique
from tests.helpers import make_collection, make_model, upsert

# ---- one meaning: Python reference vs compiled SQL -------------------------------------------------
VALUES = ["red", "blue", "1", "", 1, 0, 2, 1.0, 2.5, -3, True, False, None, [1, 2], {"x": 1}, "true"]


def random_payload(rng: random.Random) -> dict | None:
    if rng.random() < 0.08:
        return None
    payload = {}
    for key in ("color", "size", "n", "flag"):
        if rng.random() < 0.75:
            payload[key] = rng.choice(VALUES)
    if rng.random() < 0.5:
        payload["spec"] = {"w": rng.choice([1, 2, 3.5, "2", None]), "deep": {"z": rng.choice([0, 1, "a"])}}
    elif rng.random() < 0.3:
        payload["spec"] = rng.choice([5, "flat", [1]])
    return payload


def random_filter(rng: random.Random, depth: int = 0) -> filters.Node:
    roll = rng.random()
    if depth < 3 and roll < 0.3:
        nodes = tuple(random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3)))
        return filters.All(nodes) if rng.random() < 0.5 else filters.AnyOf(nodes)
    if depth < 3 and roll < 0.42:
        return filters.Not(random_filter(rng, depth + 1))
    path = rng.choice([("color",), ("size",), ("n",), ("flag",), ("spec", "w"), ("spec", "deep", "z"), ("spec",),
                       ("missing",)])
    scalars = [v for v in VALUES if isinstance(v, str | int | float) and v is not None]
    op = rng.choice(["eq", "in", "range", "exists"])
    if op == "eq":
        return filters.Condition(path, "eq", rng.choice(scalars))
    if op == "in":
        return filters.Condition(path, "in", tuple(rng.sample(scalars, 3)))
    if op == "range":
        lo = rng.choice([None, -3, 0, 1, 1.5])
        hi = rng.choice([None, 1, 2, 2.5])
        if lo is None and hi is None:
            lo = 0
        return filters.Condition(path, "range", filters.Range(gte=lo, lt=hi) if rng.random() < 0.5
                                 else filters.Range(gt=lo, lte=hi))
    return filters.Condition(path, "exists", rng.random() < 0.5)


@pytest.fixture
def store(database_url: str):
    engine = make_engine(database_url)
    migrate(engine)
    yield Store(engine)
    engine.dispose()


def test_sql_and_python_agree_on_every_random_filter(store: Store) -> None:
    rng = random.Random(3)
    model = store.create_model("v1", 2, "cosine", None, None)
    coll = store.create_collection("g", model.id, {"kind": "flat"})
    payloads = [random_payload(rng) for _ in range(300)]
    keys = [f"i{n}" for n in range(300)]
    outcome = store.upsert_items(coll.id, model.id, keys, np.ones((300, 2), np.float32), payloads)
    row_of = dict(zip(keys, outcome.ids.tolist(), strict=True))
    for _ in range(250):
        where = random_filter(rng)
        want = sorted(row_of[k] for k, p in zip(keys, payloads, strict=True) if filters.matches(where, p))
        got = store.matching_item_ids(coll.id, where, 10_000).tolist()
        assert got == want, where


def test_type_exact_matching_in_both_languages(store: Store) -> None:
    model = store.create_model("v1", 2, "cosine", None, None)
    coll = store.create_collection("g", model.id, {"kind": "flat"})
    payloads = [{"v": "1"}, {"v": 1}, {"v": 1.0}, {"v": True}, {"v": [1]}, {"v": None}, {}, None]
    keys = [f"p{n}" for n in range(len(payloads))]
    outcome = store.upsert_items(coll.id, model.id, keys, np.ones((len(keys), 2), np.float32), payloads)
    ids = dict(zip(outcome.ids.tolist(), keys, strict=True))

    def sql(where: filters.Node) -> list[str]:
        return [ids[i] for i in store.matching_item_ids(coll.id, where, 100).tolist()]

    assert sql(filters.Condition(("v",), "eq", 1)) == ["p1", "p2"]  # 1 == 1.0; "1", true, [1] are not 1
    assert sql(filters.Condition(("v",), "eq", "1")) == ["p0"]
    assert sql(filters.Condition(("v",), "eq", True)) == ["p3"]
    assert sql(filters.Condition(("v",), "exists", True)) == ["p0", "p1", "p2", "p3", "p4"]
    # not of a condition on a missing field is true (two-valued), as in Python
    assert sql(filters.Not(filters.Condition(("v",), "eq", 1))) == ["p0", "p3", "p4", "p5", "p6", "p7"]


# ---- filtered queries over HTTP ------------------------------------------------------------------
DIM = 16
N = 2_000


def exact_filtered(vectors: np.ndarray, payloads: list[dict], query: np.ndarray, where: filters.Node,
                   k: int) -> list[str]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = unit @ (query / np.linalg.norm(query))
    order = [i for i in np.argsort(-scores, kind="stable") if filters.matches(where, payloads[i])]
    return [f"i{i}" for i in order[:k]]


@pytest.fixture(scope="module")
def gallery(live) -> dict:
    """Two collections of the same N items, one flat and one HNSW; `bucket` = i % 100 gives exact
    selectivities (bucket < 1 is 1 %, < 10 is 10 %, < 50 is 50 %)."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(N, DIM)).astype(np.float32)
    payloads = [{"bucket": i % 100, "color": ["red", "green", "blue"][i % 3], "spec": {"even": i % 2 == 0}}
                for i in range(N)]
    with httpx.Client(base_url=live.url, timeout=60) as c:
        model = unique("fm")
        make_model(c, model, DIM)
        names = {}
        for kind in ("flat", "hnsw"):
            names[kind] = unique(f"f{kind}")
            make_collection(c, names[kind], model, index={"kind": kind, "hnsw_ef_search": 64})
            for lo in range(0, N, 1_000):
                r = upsert(c, names[kind], model, [f"i{i}" for i in range(lo, lo + 1_000)], vectors[lo:lo + 1_000],
                           payloads[lo:lo + 1_000], compact=True)
                assert r.status_code == 200, r.text
    return {"model": model, "names": names, "vectors": vectors, "payloads": payloads}


def query(c: httpx.Client, name: str, model: str, q: np.ndarray, k: int, where: dict | None) -> httpx.Response:
    body = {"model": model, "vector": q.tolist(), "k": k}
    if where is not None:
        body["filter"] = where
    return c.post(f"/v1/collections/{name}/query", json=body)


SELECTIVE = [({"field": "bucket", "range": {"lt": 1}}, filters.Condition(("bucket",), "range", filters.Range(lt=1))),
             ({"field": "bucket", "in": list(range(10))}, filters.Condition(("bucket",), "in", tuple(range(10)))),
             ({"and": [{"field": "bucket", "range": {"lt": 50}}, {"not": {"field": "color", "eq": "red"}}]},
              filters.All((filters.Condition(("bucket",), "range", filters.Range(lt=50)),
                           filters.Not(filters.Condition(("color",), "eq", "red")))))]


@pytest.mark.parametrize("case", range(len(SELECTIVE)), ids=["1pct", "10pct", "33pct"])
def test_filtered_queries_on_a_flat_index_are_exact(client, gallery, case) -> None:
    spec, where = SELECTIVE[case]
    rng = np.random.default_rng(case)
    for _ in range(5):
        q = rng.normal(size=DIM).astype(np.float32)
        r = query(client, gallery["names"]["flat"], gallery["model"], q, 10, spec)
        assert r.status_code == 200, r.text
        got = [h["id"] for h in r.json()["hits"]]
        assert got == exact_filtered(gallery["vectors"], gallery["payloads"], q, where, 10)
        assert all(filters.matches(where, h["payload"]) for h in r.json()["hits"])


def test_filtered_hnsw_recall_stays_high_at_every_selectivity(client, gallery) -> None:
    rng = np.random.default_rng(7)
    for spec, where in SELECTIVE:
        found = total = 0
        for _ in range(20):
            q = rng.normal(size=DIM).astype(np.float32)
            r = query(client, gallery["names"]["hnsw"], gallery["model"], q, 10, spec)
            assert r.status_code == 200, r.text
            got = [h["id"] for h in r.json()["hits"]]
            want = exact_filtered(gallery["vectors"], gallery["payloads"], q, where, 10)
            assert len(got) == 10 and len(set(got)) == 10
            found += len(set(got) & set(want))
            total += len(want)
        assert found / total >= 0.95, (spec, found / total)


def test_the_plan_follows_the_selectivity(client, gallery) -> None:
    """A broad filter is applied to the first search's hits (no SQL); a selective one is read
    from the database and only its items are searched."""
    q = np.ones(DIM, np.float32)
    broad = query(client, gallery["names"]["hnsw"], gallery["model"], q, 10, {"field": "bucket", "range": {"lt": 50}})
    assert broad.json()["filter"] == {"plan": "post-filter", "fetched": 40, "searches": 1}
    mid = query(client, gallery["names"]["hnsw"], gallery["model"], q, 10, {"field": "bucket", "range": {"lt": 8}})
    assert mid.json()["filter"]["plan"] == "post-filter" and len(mid.json()["hits"]) == 10
    narrow = query(client, gallery["names"]["hnsw"], gallery["model"], q, 10, {"field": "bucket", "eq": 3})
    assert narrow.json()["filter"] == {"plan": "pre-filter", "matching": 20, "searches": 2}
    assert len(narrow.json()["hits"]) == 10


def test_a_filter_matching_nothing_or_everything(client, gallery) -> None:
    q = np.ones(DIM, np.float32)
    r = query(client, gallery["names"]["hnsw"], gallery["model"], q, 5, {"field": "color", "eq": "purple"})
    assert r.status_code == 200 and r.json()["hits"] == []
    r = query(client, gallery["names"]["flat"], gallery["model"], q, 5, {"field": "bucket", "exists": True})
    assert [h["id"] for h in r.json()["hits"]] == [h["id"] for h in query(
        client, gallery["names"]["flat"], gallery["model"], q, 5, None).json()["hits"]]
    # nested path, and a batch of queries
    body = {"model": gallery["model"], "vectors": [q.tolist(), (-q).tolist()], "k": 3,
            "filter": {"field": "spec.even", "eq": False}}
    r = client.post(f"/v1/collections/{gallery['names']['flat']}/query", json=body)
    assert r.status_code == 200, r.text
    assert all(h["payload"]["spec"]["even"] is False for row in r.json()["results"] for h in row["hits"])


def test_filters_through_a_half_migrated_gallery(client) -> None:
    """Items re-embedded into v2 keep their v1 vector: a filtered v1 query still finds each
    matching item once, and never a non-matching one, wherever its vectors live."""
    rng = np.random.default_rng(1)
    old, new, coll = unique("mo"), unique("mn"), unique("mg")
    make_model(client, old, 8)
    make_model(client, new, 8, successor_of=old)
    make_collection(client, coll, old)
    vectors = rng.normal(size=(200, 8)).astype(np.float32)
    payloads = [{"tag": "a" if i % 4 == 0 else "b"} for i in range(200)]
    ids = [f"i{i}" for i in range(200)]
    assert upsert(client, coll, old, ids, vectors, payloads, compact=True).status_code == 200
    # re-embed half into v2 (no transformation: v2 queries would 409; v1 queries search both partitions)
    assert upsert(client, coll, new, ids[:100], vectors[:100], payloads[:100], compact=True).status_code == 200
    r = query(client, coll, old, vectors[0], 60, {"field": "tag", "eq": "a"})
    assert r.status_code == 200, r.text
    got = [h["id"] for h in r.json()["hits"]]
    assert len(got) == len(set(got)) == 50
    assert {int(i[1:]) % 4 for i in got} == {0}


BAD = [
    ({"field": "color"}, "filter"),
    ({"field": "color", "eq": [1]}, "filter.eq.eq"),
    ({"field": "1x", "eq": 1}, "filter.eq.field"),
    ({"field": "a", "range": {}}, "filter.range.range"),
    ({"field": "a", "range": {"lt": "5"}}, "filter.range.range.lt"),
    ({"and": []}, "filter.and.and"),
    ({"field": "a", "eq": 1, "in": [1]}, "filter.eq.in"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_a_malformed_filter_is_a_422_naming_the_field(client, gallery, case) -> None:
    spec, field = BAD[case]
    r = query(client, gallery["names"]["flat"], gallery["model"], np.ones(DIM, np.float32), 3, spec)
    assert r.status_code == 422, r.text
    assert r.json()["field"].startswith(field), r.json()


# ---- payload indexes -----------------------------------------------------------------------------
def test_declared_payload_index_is_listed_idempotent_and_dropped(client, gallery) -> None:
    name = gallery["names"]["flat"]
    for _ in range(2):
        r = client.put(f"/v1/collections/{name}/payload-indexes/color")
        assert r.status_code == 200 and r.json()["field"] == "color"
    assert client.put(f"/v1/collections/{name}/payload-indexes/spec.even").status_code == 200
    assert [p["field"] for p in client.get(f"/v1/collections/{name}/payload-indexes").json()] == ["color", "spec.even"]
    assert client.get(f"/v1/collections/{name}").json()["payload_indexes"] == ["color", "spec.even"]
    assert client.put(f"/v1/collections/{name}/payload-indexes/1bad").status_code == 422
    # the filtered answers are the same with the index
    q = np.ones(DIM, np.float32)
    r = query(client, name, gallery["model"], q, 10, {"field": "color", "eq": "blue"})
    assert [h["id"] for h in r.json()["hits"]] == exact_filtered(
        gallery["vectors"], gallery["payloads"], q, filters.Condition(("color",), "eq", "blue"), 10)
    assert client.delete(f"/v1/collections/{name}/payload-indexes/spec.even").status_code == 204
    assert client.delete(f"/v1/collections/{name}/payload-indexes/spec.even").status_code == 404


def test_the_database_uses_a_declared_payload_index(store: Store) -> None:
    model = store.create_model("v1", 2, "cosine", None, None)
    coll = store.create_collection("g", model.id, {"kind": "flat"})
    store.upsert_items(coll.id, model.id, [f"i{n}" for n in range(500)], np.ones((500, 2), np.float32),
                       [{"color": f"c{n % 50}", "n": n} for n in range(500)])
    record, created = store.create_payload_index(coll.id, "color")
    assert created and not store.create_payload_index(coll.id, "color")[1]
    store.create_payload_index(coll.id, "n")
    dialect = store.engine.dialect.name
    for where in (filters.Condition(("color",), "eq", "c7"), filters.Condition(("n",), "range",
                                                                               filters.Range(gte=10, lt=12))):
        clause = compile_filter(where, dialect)
        from sqlalchemy import select

        from service.store.tables import Item
        statement = select(Item.id).where(Item.collection_id == coll.id, clause)
        compiled = statement.compile(store.engine, compile_kwargs={"literal_binds": True})
        with store.engine.connect() as conn:
            if dialect == "sqlite":
                plan = " ".join(str(row[-1]) for row in conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
            else:
                conn.execute(text("SET enable_seqscan = off"))
                plan = " ".join(row[0] for row in conn.execute(text(f"EXPLAIN {compiled}")))
        assert "ix_payload_" in plan, plan
    assert len(store.matching_item_ids(coll.id, filters.Condition(("color",), "eq", "c7"), 100)) == 10
    assert store.drop_payload_index(coll.id, "color") and not store.drop_payload_index(coll.id, "color")
