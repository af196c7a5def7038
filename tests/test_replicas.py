"""Stateless replicas: two `nobackfill serve` processes and a `nobackfill worker` on one PostgreSQL
and one Milvus (a `milvus-lite server`), each with its own DATA_DIR, behind no shared disk.

What one replica acknowledges, the other serves within the stated bound (the Milvus refresh and
the hit cache's follow interval, NOBACKFILL_MILVUS_REFRESH_SECONDS; activations within
NOBACKFILL_ROUTING_REFRESH_SECONDS): items, deletes, moves between versions, a transformation
trained by the worker (its files reach each replica through the database), and its rollback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.backends import MilvusServer
from tests.conftest import _fresh_pg_database
from tests.helpers import b64, make_collection, make_model, upsert
from tests.test_durability import ServerProcess, servers  # noqa: F401  (fixture)
from tests.upgrade_helpers import upgrade_id, upload_pairs, wait_job, wordnet

OLD, NEW, LABELS, IDS = wordnet()
REFRESH = 0.5  # seconds: both the Milvus refresh and the routing refresh in this test
BOUND = 4 * REFRESH + 1.0  # what the test allows for a change to reach the other replica


@pytest.fixture
def topology(pg_server: str, tmp_path: Path, servers) -> Iterator[dict]:  # noqa: F811
    url, drop = _fresh_pg_database(pg_server)
    milvus = MilvusServer(tmp_path / "milvus")
    env = {"NOBACKFILL_INDEX_BACKEND": "milvus", "NOBACKFILL_MILVUS_URI": milvus.uri,
           "NOBACKFILL_MILVUS_PREFIX": "rep_", "NOBACKFILL_MILVUS_REFRESH_SECONDS": str(REFRESH),
           "NOBACKFILL_ROUTING_REFRESH_SECONDS": str(REFRESH), "NOBACKFILL_RUN_WORKER": "false"}
    worker = None
    replicas: list[ServerProcess] = []
    try:
        a = servers(tmp_path / "a", url, **env)
        replicas.append(a.start())
        b = servers(tmp_path / "b", url, **env)
        replicas.append(b.start())
        worker_env = {**os.environ, "NOBACKFILL_DATA_DIR": str(tmp_path / "w"), "NOBACKFILL_DATABASE_URL": url,
                      "NOBACKFILL_LOG_LEVEL": "warning", **env}
        worker = subprocess.Popen([sys.executable, "-m", "service.cli.main", "worker"], env=worker_env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield {"a": a, "b": b, "dirs": [tmp_path / "a", tmp_path / "b", tmp_path / "w"]}
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        for replica in replicas:
            replica.kill()
        milvus.stop()
        drop()


def query(client: httpx.Client, coll: str, model: str, vectors: np.ndarray, k: int = 5) -> httpx.Response:
    return client.post(f"/v1/collections/{coll}/query",
                       json={"model": model, "vectors_b64": b64(vectors), "k": k, "include_payload": False})


def until(check, what: str, bound: float = BOUND) -> float:
    """Seconds until `check()` is true; fails past `bound`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < bound, f"{what} did not reach the other replica within {bound} s"
        time.sleep(0.02)
    return time.monotonic() - started


def test_two_replicas_serve_each_others_writes_and_the_workers_transformation(topology) -> None:
    a = httpx.Client(base_url=topology["a"].url, timeout=60)
    b = httpx.Client(base_url=topology["b"].url, timeout=60)
    v1, v2, coll = "v1", "v2", "g"
    make_model(a, v1, OLD.shape[1])
    make_collection(a, coll, v1)
    assert upsert(a, coll, v1, IDS, OLD, compact=True).status_code == 200

    # a write acknowledged by A is served by B (the first query on B also discovers the partition)
    seen = until(lambda: [h["id"] for h in query(b, coll, v1, OLD[:1], 1).json()["results"][0]["hits"]] == [IDS[0]],
                 "an upsert")
    # a delete acknowledged by A is never returned by a query B starts afterwards
    assert a.delete(f"/v1/collections/{coll}/items/{IDS[1]}").status_code == 204
    hits = query(b, coll, v1, OLD[1:2], 10).json()["results"][0]["hits"]
    assert IDS[1] not in {h["id"] for h in hits}

    # the successor, registered through B; pairs through A; trained by the worker (no replica runs jobs)
    make_model(b, v2, NEW.shape[1], successor_of=v1)
    uid = upgrade_id(a, v2)
    half = list(range(0, len(IDS), 2))
    assert upload_pairs(a, uid, [IDS[i] for i in half], OLD[half], NEW[half]).status_code == 200
    job_id = b.post(f"/v1/upgrades/{uid}/train", json={"method": "procrustes"}).json()["id"]
    job = wait_job(a, job_id, timeout=120)
    assert job["state"] == "succeeded", job
    if not job["result"]["activated"]:
        assert b.post(f"/v1/upgrades/{uid}/activate", json={"force": True}).status_code == 200
    for replica in (a, b):  # the worker's transformation reaches both replicas through the database
        until(lambda r=replica: query(r, coll, v2, NEW[2:3]).status_code == 200, "an activation")
    ranked = [[h["id"] for h in query(r, coll, v2, NEW[:20], 10).json()["results"][0]["hits"]] for r in (a, b)]
    assert ranked[0] == ranked[1], "both replicas serve the same transformation"
    assert all((d / "transformations").is_dir() for d in topology["dirs"][:2]), "each materialised its own copy"

    # items re-embedded through B: within the bound A serves exactly what B (the writer) serves,
    # for both client kinds, one hit per item
    moved = list(range(100, 160))
    before = [(h["id"], h["model"]) for h in query(a, coll, v2, NEW[moved[:1]], 10).json()["results"][0]["hits"]]
    assert upsert(b, coll, v2, [IDS[i] for i in moved], NEW[moved], compact=True).status_code == 200

    def served(replica: httpx.Client) -> list:
        rows = query(replica, coll, v2, NEW[moved[:10]], 10).json()["results"]
        rows += query(replica, coll, v1, OLD[moved[:10]], 10).json()["results"]
        return [[(h["id"], h["model"]) for h in row["hits"]] for row in rows]

    after = served(b)
    assert after[0] != before and all(len(row) == len(set(row)) == 10 for row in after)
    assert {m for row in after for _, m in row} == {v1, v2}, "the re-embedded items are served from v2"
    moved_seen = until(lambda: served(a) == after, "a re-embedding")

    # moves through B (old vectors dropped) while A queries: A never misses an item, never repeats one
    live = len(IDS) - 1  # one was deleted
    stop = threading.Event()
    problems: list[str] = []
    answers = [0]

    def query_a() -> None:
        with httpx.Client(base_url=topology["a"].url, timeout=60) as qa:
            while not stop.is_set():
                hits = query(qa, coll, v2, NEW[:1], live).json()["results"][0]["hits"]
                ids = [h["id"] for h in hits]
                answers[0] += 1
                if len(ids) != live or len(set(ids)) != live:
                    problems.append(f"{len(ids)} hits, {len(set(ids))} distinct")

    reader = threading.Thread(target=query_a)
    reader.start()
    try:
        for start in range(160, 400, 40):
            batch = list(range(start, start + 40))
            r = upsert(b, coll, v2, [IDS[i] for i in batch], NEW[batch], compact=True, previous_vectors="drop")
            assert r.status_code == 200, r.text
    finally:
        stop.set()
        reader.join()
    assert answers[0] > 0 and not problems, problems[:3]

    # rollback (deactivate) through A reaches B: v2 queries no longer reach v1's partition
    assert a.post(f"/v1/upgrades/{uid}/deactivate").status_code == 200
    until(lambda: {s["model"] for s in query(b, coll, v2, NEW[:1]).json()["searched"]} == {v2}, "a rollback")
    print(f"\nreplica bounds: upsert seen after {seen:.2f} s, re-embedding after {moved_seen:.2f} s")
    a.close()
    b.close()


class _Died(BaseException):
    """A process dying between its database commit and its Milvus write (not an error it handles)."""


def test_a_writer_that_dies_between_its_commit_and_milvus_is_repaired_by_the_next_writer(
        pg_server: str, tmp_path: Path) -> None:
    """Two writers of one collection on one Milvus: the first dies after committing a batch, before
    Milvus has it; the second's next write -- which moves the Milvus tag to the newest counter --
    finds the dead writer's journal entry and repairs the batch first. Without the journal the
    batch would stay out of Milvus for good (a restart trusts a current tag)."""
    from index import IndexSpec, create_backend
    from service.core.catalog import Catalog
    from service.core.gallery import Gallery
    from service.core.index_sync import load_all
    from service.core.transform_graph import TransformGraph
    from service.store import Store
    from service.store.db import make_engine, migrate

    url, drop = _fresh_pg_database(pg_server)
    milvus = MilvusServer(tmp_path / "milvus")
    engines, backends = [], []
    try:
        def process(name: str) -> Gallery:
            engine = make_engine(url)
            migrate(engine)
            store = Store(engine)
            backend = create_backend("milvus", uri=milvus.uri, prefix="die_", refresh_seconds=0.0)
            engines.append(engine)
            backends.append(backend)
            gallery = Gallery(store, Catalog(store, 4096), backend, TransformGraph(store, tmp_path / name),
                              hit_cache_items=1000, follow_other_writers=True, follow_seconds=0.0,
                              journal_writes=True)
            gallery.ready.set()
            return gallery

        first, second = process("one"), process("two")
        model = first.catalog.create_model("v1", OLD.shape[1], "cosine", None, None)
        coll = first.catalog.create_collection("g", "v1", IndexSpec())
        first.upsert(coll, model, IDS[:100], OLD[:100], [None] * 100)

        def dies(*args, **kwargs):
            raise _Died()

        first.backend.apply = dies
        with pytest.raises(_Died):
            first.upsert(coll, model, IDS[100:200], OLD[100:200], [None] * 100)
        assert first.store.get_item(coll.id, IDS[150], lambda _: OLD.shape[1]) is not None, "committed"
        second.upsert(coll, second.catalog.model("v1"), IDS[200:300], OLD[200:300], [None] * 100)

        key = next(iter(second.backend.partitions(coll.id)))
        stored = second.store.partition_ids(coll.id, model.id)
        assert np.array_equal(second.backend.live_ids(key), stored), "the dead writer's batch is in Milvus"
        assert second.backend.tag(coll.id) == second.store.collection_seq(coll.id)
        with second.store.index_writer(coll.id) as journal:
            assert journal.orphans() == []
        hits = second.query(coll, model, OLD[150:151], 1).hits[0]
        assert [h.key for h in hits] == [IDS[150]]
        assert load_all(second.store, second.backend, second.model_dims())["g"] == {"added": 0, "removed": 0}
    finally:
        for backend in backends:
            backend.close()
        for engine in engines:
            engine.dispose()
        milvus.stop()
        drop()


def test_kill_9_of_a_replica_four_times_and_of_milvus_once_loses_no_acknowledged_write(
        pg_server: str, tmp_path: Path, servers) -> None:  # noqa: F811
    """Replica A is killed with SIGKILL four times while two writers stream batches into it (every
    third batch rewriting ids of an earlier acknowledged one); replica B takes writes throughout,
    and once the Milvus server itself is killed and restarted under it. Afterwards: every
    acknowledged id is stored and found by a query, Milvus holds each
    stored vector exactly once, and every replica recovered (every id checked through A, a
    seventh of them through B, to keep the test under a minute)."""
    from tests.test_durability import assert_all_findable, vectors_for

    url, drop = _fresh_pg_database(pg_server)
    milvus = MilvusServer(tmp_path / "milvus")
    env = {"NOBACKFILL_INDEX_BACKEND": "milvus", "NOBACKFILL_MILVUS_URI": milvus.uri,
           "NOBACKFILL_MILVUS_PREFIX": "kill_", "NOBACKFILL_MILVUS_REFRESH_SECONDS": "0.2"}
    acked: list[list[str]] = []
    lock = threading.Lock()
    try:
        b = servers(tmp_path / "b", url, **env).start()
        with httpx.Client(base_url=b.url, timeout=30) as c:
            make_model(c, "v1", 16)
            make_collection(c, "g", "v1", index={"kind": "hnsw"})

        def writer(base_url: str, name: str, stop: threading.Event) -> None:
            with httpx.Client(base_url=base_url, timeout=10) as c:
                n = 0
                while not stop.is_set():
                    ids = [f"{name}-b{n}-{i}" for i in range(40)]
                    with lock:
                        if n % 3 == 2 and acked:
                            ids = ids[:30] + acked[-1][:10]
                    try:
                        r = upsert(c, "g", "v1", ids, vectors_for(ids), compact=True)
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        with lock:
                            acked.append(ids)
                    n += 1

        for cycle in range(4):  # 5-7 s per cycle (a replica's start): the test stays well under a minute
            a = servers(tmp_path / "a", url, **env).start()
            stop = threading.Event()
            threads = [threading.Thread(target=writer, args=(a.url, f"a{cycle}w{w}", stop)) for w in range(2)]
            threads.append(threading.Thread(target=writer, args=(b.url, f"b{cycle}", stop)))
            for t in threads:
                t.start()
            time.sleep(0.4)
            if cycle == 2:  # the engine itself dies under both replicas, and comes back
                milvus.kill()
                time.sleep(0.3)
                milvus.start()
                time.sleep(0.3)
            a.kill()
            stop.set()
            for t in threads:
                t.join()
        assert len(acked) > 4, f"only {len(acked)} batches acknowledged"

        a = servers(tmp_path / "a", url, **env).start()  # recovers (and repairs what the kills left)
        acked_ids = sorted({i for batch in acked for i in batch})
        with httpx.Client(base_url=b.url, timeout=30) as cb, httpx.Client(base_url=a.url, timeout=30) as ca:
            # one more write through B: a dead writer's journal entry is repaired first
            assert upsert(cb, "g", "v1", ["final"], vectors_for(["final"]), compact=True).status_code == 200
            assert_all_findable(ca, "g", "v1", acked_ids)  # every id through the replica that was killed
            assert_all_findable(cb, "g", "v1", acked_ids[::7])  # and a sample through the other
            info = cb.get("/v1/collections/g").json()
            (part,) = info["partitions"]
            assert part["vectors"] == info["items"] >= len(acked_ids), "Milvus holds each stored vector once"
    finally:
        milvus.stop()
        drop()
