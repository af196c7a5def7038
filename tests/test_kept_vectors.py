"""Kept vectors through the gallery on a real store and FAISS: indexed, repaired, deleted, retired."""

from __future__ import annotations

import numpy as np
import pytest

from index import IndexSpec, PartitionKey, create_backend
from service.core.catalog import Catalog
from service.core.gallery import Gallery
from service.core.index_sync import reconcile_collection
from service.core.transform_graph import TransformGraph
from service.store import Store


def _setup(store: Store, catalog: Catalog, gallery: Gallery):
    v1 = catalog.create_model("v1", 8, "cosine", None, None)
    v2 = catalog.create_model("v2", 6, "cosine", "v1", None)
    coll = catalog.create_collection("g", "v1", IndexSpec())
    rng = np.random.default_rng(0)
    old, new = rng.normal(size=(30, 8)).astype(np.float32), rng.normal(size=(30, 6)).astype(np.float32)
    keys = [f"k{i}" for i in range(30)]
    gallery.upsert(coll, v1, keys, old, [None] * 30)
    return v1, v2, catalog.collection("g"), keys, old, new


def test_kept_vectors_serve_old_queries_and_survive_a_rebuild_from_the_store(gallery_parts, tmp_path) -> None:
    store, catalog, make = gallery_parts
    gallery = make(tmp_path / "a")
    v1, v2, coll, keys, old, new = _setup(store, catalog, gallery)
    out = gallery.upsert(coll, v2, keys[:10], new[:10], [None] * 10)  # re-embedding (default: keep)
    assert out.kept == 10
    assert gallery.partition_sizes(coll) == {v1.id: 30, v2.id: 10}
    hit = gallery.query(coll, v1, old[3:4], k=1).hits[0][0]
    assert (hit.key, hit.model_id) == ("k3", v1.id) and hit.score == pytest.approx(1.0, abs=1e-5)
    # a process that lost its index files rebuilds the v1 partition, kept vectors included
    fresh = make(tmp_path / "b")
    reconcile_collection(store, fresh.backend, coll, fresh.model_dims())
    key = PartitionKey(coll.id, v1.id)
    assert fresh.backend.count(key) == 30
    result = fresh.backend.search(coll.id, {v1.id: old[:10]}, 1)[v1.id]
    assert result.ids[:, 0].tolist() == store.partition_ids(coll.id, v2.id).tolist()  # rows in insertion order
    assert np.allclose(result.scores[:, 0], 1.0, atol=1e-5)  # the very vectors written to v1


def test_delete_removes_every_representation_and_retire_drops_the_kept_partition(gallery_parts, tmp_path) -> None:
    store, catalog, make = gallery_parts
    gallery = make(tmp_path / "a")
    v1, v2, coll, keys, old, new = _setup(store, catalog, gallery)
    gallery.upsert(coll, v2, keys, new, [None] * 30)
    gallery.delete(coll, "k0")
    assert gallery.partition_sizes(coll) == {v1.id: 29, v2.id: 29}
    assert "k0" not in {h.key for h in gallery.query(coll, v1, old[:1], k=29).hits[0]}
    gallery.retire(coll, v1)  # nothing is current in v1 any more: its kept vectors go with it
    assert gallery.partition_sizes(coll) == {v2.id: 29}
    assert store.kept_counts(coll.id) == {}


def test_content_change_drops_the_old_vector_from_old_queries(gallery_parts, tmp_path) -> None:
    store, catalog, make = gallery_parts
    gallery = make(tmp_path / "a")
    v1, v2, coll, keys, old, new = _setup(store, catalog, gallery)
    out = gallery.upsert(coll, v2, keys[:5], new[:5], [None] * 5, keep_previous=False)
    assert out.kept == 0 and gallery.partition_sizes(coll) == {v1.id: 25, v2.id: 5}
    # v1 queries cannot reach v2 without an active transformation: the stale v1 vector is gone
    found = {h.key for h in gallery.query(coll, v1, old[:5], k=30).hits[0]}
    assert not found & set(keys[:5])


def test_items_just_written_are_served_without_a_database_read(gallery_parts, tmp_path, monkeypatch) -> None:
    """Write-through: the upsert fills the hit cache with the records it committed, so the first
    queries after an ingest read nothing from SQL (bench/first_pass.py measured the cold path)."""
    store, catalog, make = gallery_parts
    backend = create_backend("faiss", directory=tmp_path / "wt")
    gallery = Gallery(store, catalog, backend, TransformGraph(store, tmp_path), hit_cache_items=1_000)
    gallery.ready.set()
    v1, v2, coll, keys, old, new = _setup(store, catalog, gallery)
    gallery.upsert(coll, v2, keys[:10], new[:10], [{"moved": True}] * 10)  # re-embedded, v1 vectors kept
    reads: list[list[int]] = []
    real = store.hits_by_id
    monkeypatch.setattr(store, "hits_by_id", lambda cid, ids, **kw: reads.append(list(ids)) or real(cid, ids, **kw))
    hits = gallery.query(coll, v1, old[:5], 10).hits
    assert reads == [] and [row[0].key for row in hits] == keys[:5]
    assert hits[0][0].model_id == v1.id and hits[0][0].payload == {"moved": True}  # old client, own vector
