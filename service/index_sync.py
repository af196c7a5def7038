"""Keeping FAISS partitions equal to the database: start-up repair and periodic snapshots.

The database is the source of truth. At start-up each partition is loaded from its snapshot (if a
usable one exists) and then reconciled by set difference with the stored vector ids: vectors the
snapshot lacks are added from the database, vectors it has that the database no longer has are
removed. That repairs every way an index can go stale (crash between commit and index update,
a crash before the last snapshot, a deleted or corrupt snapshot) with one rule, and costs only an
id scan when the snapshot is current.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from index import IndexBackend, IndexSpec, PartitionKey
from index.backend import PartitionWrite
from service.store import CollectionRecord, Store

log = logging.getLogger(__name__)

_REPAIR_CHUNK = 20_000


def partition_key(collection_id: int, model_id: int) -> PartitionKey:
    """Index partitions are named by database ids, so renames and odd names never touch the disk."""
    return PartitionKey(f"c{collection_id}", f"m{model_id}")


def reconcile_collection(
    store: Store, backend: IndexBackend, collection: CollectionRecord, dims: dict[int, tuple[int, str]]
) -> dict[str, int]:
    """Make every partition of `collection` hold exactly the stored vectors. Returns repair counts.

    `dims` maps model id -> (dim, metric) for every registered model.
    """
    spec = IndexSpec.from_dict(collection.index_spec)
    stored_models = set(store.item_counts(collection.id))
    indexed_models = {int(k.model[1:]) for k in backend.partitions(f"c{collection.id}")}
    added = removed = 0
    for model_id in sorted(stored_models | indexed_models):
        key = partition_key(collection.id, model_id)
        dim, metric = dims[model_id]
        if not backend.has_partition(key):
            if backend.restore(key, dim, metric, spec) is None:
                backend.ensure_partition(key, dim, metric, spec)
        want = store.partition_seqs(collection.id, model_id)
        have = backend.live_ids(key)
        extra = np.setdiff1d(have, want, assume_unique=True)
        missing = np.setdiff1d(want, have, assume_unique=True)
        if len(extra):
            backend.apply(key.collection, {key.model: PartitionWrite(remove=extra)})
            removed += len(extra)
        for start in range(0, len(missing), _REPAIR_CHUNK):
            seqs, vectors = store.vectors_by_seq(collection.id, missing[start : start + _REPAIR_CHUNK].tolist(), dim)
            backend.apply(key.collection, {key.model: PartitionWrite(add_ids=seqs, add_vectors=vectors)})
            added += len(seqs)
    if added or removed:
        log.info("collection %s: index repaired from the store (+%d, -%d vectors)", collection.name, added, removed)
    return {"added": added, "removed": removed}


class SnapshotScheduler:
    """Writes partition snapshots in the background once enough changes have accumulated.

    Snapshots only shorten start-up; correctness never depends on them (see module docstring).
    """

    def __init__(self, store: Store, backend: IndexBackend, every_changes: int, interval_s: float) -> None:
        self.store = store
        self.backend = backend
        self.every_changes = every_changes
        self.interval_s = interval_s
        self._persisted_seq: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def mark_loaded(self, collection: CollectionRecord, repaired: bool) -> None:
        """After start-up: a collection whose index needed no repair has a current snapshot."""
        self._persisted_seq[collection.id] = -1 if repaired else collection.seq

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nobackfill-snapshots", daemon=True)
        self._thread.start()

    def stop(self, final_snapshot: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if final_snapshot:
            self.snapshot_due(threshold=1)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.snapshot_due(self.every_changes)
            except Exception:
                log.exception("snapshot pass failed; will retry")

    def snapshot_due(self, threshold: int) -> int:
        """Snapshot collections with at least `threshold` changes since their last snapshot."""
        written = 0
        for collection in self.store.list_collections():
            last = self._persisted_seq.get(collection.id, -1)
            if collection.seq - last < threshold and last >= 0:
                continue
            for key in self.backend.partitions(f"c{collection.id}"):
                self.backend.persist(key, collection.seq)
                written += 1
            self._persisted_seq[collection.id] = collection.seq
        return written


def load_all(store: Store, backend: IndexBackend, dims: dict[int, tuple[int, str]],
             scheduler: SnapshotScheduler | None = None) -> dict[str, dict[str, int]]:
    """Load and repair every collection's partitions (start-up)."""
    report = {}
    started = time.perf_counter()
    for collection in store.list_collections():
        counts = reconcile_collection(store, backend, collection, dims)
        report[collection.name] = counts
        if scheduler is not None:
            scheduler.mark_loaded(collection, repaired=bool(counts["added"] or counts["removed"]))
    log.info("indexes loaded for %d collections in %.2fs", len(report), time.perf_counter() - started)
    return report
