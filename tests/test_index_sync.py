"""Start-up repair of FAISS partitions from snapshots (service/core/index_sync.py), on a real store
and real FAISS: a current snapshot is trusted without reading ids; anything else is scanned."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from sqlalchemy import delete, select

from index import IndexSpec, PartitionKey, create_backend
from service.core.catalog import Catalog
from service.core.gallery import Gallery
from service.core.index_sync import SnapshotScheduler, load_all
from service.core.transform_graph import TransformGraph
from service.store import Store
from service.store.tables import Item


@pytest.fixture
def service(gallery_parts, tmp_path):
    """(store, catalog, gallery) on a fresh database, with FAISS snapshots under tmp_path/idx."""
    store, catalog, make_gallery = gallery_parts
    return store, catalog, make_gallery(tmp_path / "idx")


@pytest.fixture
def written(service, tmp_path):
    """A collection of 40 items in v1, 10 of them re-embedded in v2 (kept v1 vectors), snapshotted."""
    store, catalog, gallery = service
    v1 = catalog.create_model("v1", 8, "cosine", None, None)
    v2 = catalog.create_model("v2", 6, "cosine", "v1", None)
    coll = catalog.create_collection("g", "v1", IndexSpec())
    rng = np.random.default_rng(0)
    keys = [f"k{i}" for i in range(40)]
    old = rng.normal(size=(40, 8)).astype(np.float32)
    gallery.upsert(coll, v1, keys, old, [None] * 40)
    gallery.upsert(coll, v2, keys[:10], rng.normal(size=(10, 6)).astype(np.float32), [None] * 10)
    assert SnapshotScheduler(gallery.backend, 1, 60).snapshot_due(threshold=1) == 2
    return store, catalog, catalog.collection("g"), (v1, v2), old, tmp_path / "idx", gallery


def _restart(store: Store, catalog: Catalog, directory):
    backend = create_backend("faiss", directory=directory)
    gallery = Gallery(store, catalog, backend, TransformGraph(store, directory.parent))
    return backend, load_all(store, backend, gallery.model_dims())


def test_a_current_snapshot_is_restored_without_reading_ids(written, monkeypatch) -> None:
    store, catalog, coll, (v1, v2), old, directory, _ = written

    def no_scan(*args, **kwargs):
        raise AssertionError("a current snapshot should not need an id scan")

    rows = store.partition_ids(coll.id, v1.id)  # k0..k39's row ids, in insertion order
    monkeypatch.setattr(store, "partition_ids", no_scan)
    backend, report = _restart(store, catalog, directory)
    assert report == {"g": {"added": 0, "removed": 0}}
    assert backend.count(PartitionKey(coll.id, v1.id)) == 40 and backend.count(PartitionKey(coll.id, v2.id)) == 10
    hit = backend.search(coll.id, {v1.id: old[7:8]}, 1)[v1.id]
    assert hit.ids[0, 0] == rows[7] and hit.scores[0, 0] == pytest.approx(1.0, abs=1e-5)  # k7's kept vector


def test_a_current_tag_beside_other_rows_is_scanned_and_repaired(written, monkeypatch) -> None:
    """The tag alone is not trusted: rows removed behind the service's back (a database the snapshot
    was not written from, with the same change counter) change the count, and the scan repairs."""
    store, catalog, coll, (v1, v2), old, directory, _ = written
    with store.engine.begin() as conn:
        conn.execute(delete(Item).where(Item.key.in_(["k20", "k21"])))  # two v1-only items; seq unchanged
    assert store.get_collection("g").seq == coll.seq
    scans = []
    real = store.partition_ids
    monkeypatch.setattr(store, "partition_ids", lambda *a, **kw: scans.append(a) or real(*a, **kw))
    backend, report = _restart(store, catalog, directory)
    assert report == {"g": {"added": 0, "removed": 2}}
    assert {a[1] for a in scans} == {v1.id}, "only the partition whose count differs is scanned"
    assert backend.count(PartitionKey(coll.id, v1.id)) == 38


def test_a_snapshot_behind_the_counter_is_scanned_even_when_its_count_matches(written) -> None:
    """Vectors replaced after the snapshot leave every count as it was; the tag is behind, so the
    scan re-adds the replaced rows and each item is found by its new vector."""
    store, catalog, coll, (v1, v2), old, directory, gallery = written
    rng = np.random.default_rng(1)
    new = rng.normal(size=(5, 8)).astype(np.float32)
    gallery.upsert(coll, v1, [f"k{i}" for i in range(20, 25)], new, [None] * 5)  # v1-only items, replaced
    backend, report = _restart(store, catalog, directory)
    assert report == {"g": {"added": 5, "removed": 5}}
    rows = store.partition_ids(coll.id, v1.id)
    assert backend.search(coll.id, {v1.id: new}, 1)[v1.id].ids[:, 0].tolist() == rows[20:25].tolist()


def test_snapshots_taken_while_two_writers_stream_restore_every_written_item(service, tmp_path) -> None:
    """Snapshots every 0.1 s while two writers stream batches (every third one rewriting ten items
    of the latest batch), then a restart from whatever snapshot is newest -- no final snapshot, as
    after a kill: each written item is its own top hit, whether start-up scanned or trusted the tag."""
    store, catalog, gallery = service
    v1 = catalog.create_model("v1", 16, "cosine", None, None)
    catalog.create_collection("g", "v1", IndexSpec(kind="hnsw"))
    scheduler = SnapshotScheduler(gallery.backend, every_changes=100, interval_s=0.1)
    scheduler.start()
    vectors: dict[str, np.ndarray] = {}
    written: list[list[str]] = []
    guard, stop = threading.Lock(), threading.Event()

    def writer(worker: int) -> None:
        rng = np.random.default_rng(worker)
        batch = 0
        while not stop.is_set():
            keys = [f"w{worker}-b{batch}-{i}" for i in range(40)]
            with guard:
                if batch % 3 == 2 and written:
                    keys = keys[:30] + written[-1][:10]
                for key in keys:
                    vectors.setdefault(key, rng.normal(size=16).astype(np.float32))
                batch_vectors = np.stack([vectors[k] for k in keys])
            gallery.upsert(catalog.collection("g"), v1, keys, batch_vectors, [None] * 40)
            with guard:
                written.append(keys)
            batch += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    scheduler.stop(final_snapshot=False)
    assert list((tmp_path / "idx").rglob("*.npz")), "the scheduler wrote snapshots while the writers ran"

    backend, _ = _restart(store, catalog, tmp_path / "idx")
    keys = sorted({k for batch in written for k in batch})
    coll = catalog.collection("g")
    found = backend.search(coll.id, {v1.id: np.stack([vectors[k] for k in keys])}, 1)[v1.id].ids[:, 0]
    with store.engine.connect() as conn:
        key_of = dict(conn.execute(select(Item.id, Item.key)).all())
    assert [key_of.get(int(row)) for row in found] == keys
