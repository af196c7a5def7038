"""Queries keep being served, correctly, while writes stream in (over real HTTP)."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest

from tests.conftest import unique
from tests.helpers import b64, make_collection, make_model, upsert


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_queries_during_writes_have_no_errors(client, live, kind) -> None:
    m, c = unique("m"), unique("c")
    dim = 32
    make_model(client, m, dim)
    make_collection(client, c, m, index={"kind": kind, "ivf_train_min": 500})
    rng = np.random.default_rng(0)
    base = rng.normal(size=(400, dim)).astype(np.float32)
    assert upsert(client, c, m, [f"i{i}" for i in range(400)], base, compact=True).status_code == 200

    stop = threading.Event()
    errors: list[str] = []
    counts = {"queries": 0, "writes": 0}

    def writer() -> None:
        with httpx.Client(base_url=live.url, timeout=30) as w:
            n = 0
            while not stop.is_set():
                ids = [f"i{(n * 37 + j) % 1200}" for j in range(50)]  # mixes updates and inserts
                r = upsert(w, c, m, ids, rng.normal(size=(50, dim)).astype(np.float32), compact=True)
                if r.status_code != 200:
                    errors.append(f"write {r.status_code}: {r.text[:200]}")
                counts["writes"] += 1
                n += 1

    def reader() -> None:
        with httpx.Client(base_url=live.url, timeout=30) as q:
            while not stop.is_set():
                r = q.post(f"/v1/collections/{c}/query",
                           json={"model": m, "vectors_b64": b64(base[:8]), "k": 20, "include_payload": False})
                if r.status_code != 200:
                    errors.append(f"query {r.status_code}: {r.text[:200]}")
                    continue
                for res in r.json()["results"]:
                    ids = [h["id"] for h in res["hits"]]
                    if len(ids) != len(set(ids)) or len(ids) != 20:
                        errors.append(f"bad result: {len(ids)} hits, {len(set(ids))} distinct; "
                                      f"searched {r.json()['searched']}, skipped {r.json()['skipped']}")
                counts["queries"] += 1

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    # enough overlap to mean something; Milvus Lite answers a query in ~50 ms here, so no tight floor
    assert counts["queries"] > 4 and counts["writes"] > 2, counts
    final = client.get(f"/v1/collections/{c}").json()["items"]
    assert final == len({f"i{(n * 37 + j) % 1200}" for n in range(counts["writes"]) for j in range(50)} |
                         {f"i{i}" for i in range(400)})
