"""Keeping FAISS partitions equal to the database: repair on start-up and periodic snapshots.

The database is the source of truth; an index partition is a cache of it, identified by item row
ids and tagged with the collection's change counter (`collections.seq`) of the last write it has
seen. Repair of one partition, whatever happened to it (crash between commit and index update,
crash after the last snapshot, a deleted or corrupt snapshot file):
- ids in the index but no longer in this partition in the database -> removed;
- ids in the database but not in the index -> added;
- ids written after the partition's tag (replaced vectors) -> removed and re-added.
A partition whose tag equals the store's counter skips even the id scan: every write up to it was
applied (the tag is set after the data, under the partition's write lock, and one process writes
in counter order), so a restart reads no ids at all. That holds for a durable backend (Milvus) and
for a FAISS snapshot whose vector count also equals the store's count for the partition (a cheap
guard against a snapshot beside a database it was not written from); anything else costs one id
scan per partition (at 1M items 0.6 s of a restart).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from index import IndexBackend, IndexSpec, PartitionKey, PartitionWrite
from service.store import CollectionRecord, Journal, Store

log = logging.getLogger(__name__)

_REPAIR_CHUNK = 20_000


def reconcile_collection(
    store: Store, backend: IndexBackend, collection: CollectionRecord, dims: dict[int, tuple[int, str]],
    since: int | None = None,
) -> dict[str, int]:
    """Make every partition of `collection` hold exactly the stored vectors; return repair counts.

    Callers guarantee no concurrent writes to the collection (start-up, or under its write lock).
    `dims` maps model id -> (dim, metric) for every registered model. `since`: a change counter
    from which writes may be missing whatever the tag says (a dead writer's journal entry).
    """
    cid = collection.id
    current = store.get_collection(collection.name)
    spec = IndexSpec.from_dict(collection.index_spec)
    current_counts, kept_counts = store.item_counts(collection.id), store.kept_counts(collection.id)
    stored_models = set(current_counts) | set(kept_counts)
    indexed_models = {k.model for k in backend.partitions(cid)}
    added = removed = 0
    restored_tags: list[int | None] = []
    for model_id in sorted(stored_models | indexed_models):
        key = PartitionKey(cid, model_id)
        dim, metric = dims[model_id]
        if backend.has_partition(key):
            seen_tag: int | None = backend.tag(cid)
        else:
            seen_tag = backend.restore(key, dim, metric, spec)
            if seen_tag is None:
                backend.ensure_partition(key, dim, metric, spec)
            restored_tags.append(seen_tag)
        if since is not None:
            seen_tag = since if seen_tag is None else min(seen_tag, since)
        elif seen_tag == current.seq and (backend.durable or backend.count(key) == (
                current_counts.get(model_id, 0) + kept_counts.get(model_id, 0))):
            continue
        want = store.partition_ids(collection.id, model_id)
        have = backend.live_ids(key)
        stale = np.empty(0, dtype=np.int64)
        if seen_tag is not None and len(have):
            changed = store.partition_ids(collection.id, model_id, changed_after=seen_tag)
            stale = np.intersect1d(changed, have, assume_unique=True)
        drop = np.union1d(np.setdiff1d(have, want, assume_unique=True), stale)
        fill = np.union1d(np.setdiff1d(want, have, assume_unique=True), stale)
        if len(drop):
            backend.apply(cid, {model_id: PartitionWrite(remove=drop)})
            removed += len(drop)
        for start in range(0, len(fill), _REPAIR_CHUNK):
            ids, vectors = store.vectors_by_id(collection.id, model_id, fill[start : start + _REPAIR_CHUNK].tolist(),
                                               dim)
            backend.apply(cid, {model_id: PartitionWrite(add_ids=ids, add_vectors=vectors)})
            added += len(ids)
    backend.apply(cid, {}, tag=current.seq)
    if added or removed:
        log.info("collection %s: index repaired from the store (+%d, -%d vectors)", collection.name, added, removed)
    return {"added": added, "removed": removed}


def repair_dead_writes(journal: Journal, store: Store, backend: IndexBackend, collection: CollectionRecord,
                       dims: dict[int, tuple[int, str]]) -> dict[str, int] | None:
    """With the collection's index-writer lock held: repair from the oldest write a dead process
    left in the journal and clear its entries; None when there is none (store/journal.py)."""
    orphans = journal.orphans()
    if not orphans:
        return None
    since = min(seq for _, seq in orphans)
    log.warning("collection %s: %d index write(s) of a process that died; repairing from change %d",
                collection.name, len(orphans), since)
    counts = reconcile_collection(store, backend, collection, dims, since=since)
    journal.clear([entry for entry, _ in orphans])
    return counts


class SnapshotScheduler:
    """Writes partition snapshots in the background once enough changes have accumulated.

    Snapshots only shorten start-up; correctness never depends on them (see module docstring).
    """

    def __init__(self, backend: IndexBackend, every_changes: int, interval_s: float) -> None:
        self.backend = backend
        self.every_changes = every_changes
        self.interval_s = interval_s
        self._persisted: dict[int, int | None] = {}  # collection -> tag on disk (None: unknown)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def mark_loaded(self, collection: int, tag_on_disk: int | None) -> None:
        self._persisted[collection] = tag_on_disk

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
        """Snapshot collections with at least `threshold` changes since their snapshot on disk."""
        written = 0
        for cid in sorted({k.collection for k in self.backend.partitions()}):
            tag = self.backend.tag(cid)
            on_disk = self._persisted.get(cid)
            if on_disk is not None and tag - on_disk < threshold:
                continue
            for key in self.backend.partitions(cid):
                self.backend.persist(key)
                written += 1
            self._persisted[cid] = tag
        return written


def load_all(store: Store, backend: IndexBackend, dims: dict[int, tuple[int, str]],
             scheduler: SnapshotScheduler | None = None) -> dict[str, dict[str, int]]:
    """Load and repair every collection's partitions (start-up).

    On a shared engine each collection is repaired under its cross-process index-writer lock, from
    the oldest write a dead process left in the journal (store/journal.py) if there is one."""
    report = {}
    started = time.perf_counter()
    for collection in store.list_collections():
        if backend.durable:
            with store.index_writer(collection.id) as journal:
                counts = repair_dead_writes(journal, store, backend, collection, dims) \
                    or reconcile_collection(store, backend, collection, dims)
        else:
            counts = reconcile_collection(store, backend, collection, dims)
        report[collection.name] = counts
        if scheduler is not None:
            clean = not (counts["added"] or counts["removed"])
            scheduler.mark_loaded(collection.id, backend.tag(collection.id) if clean else None)
    backend.startup_done()
    log.info("indexes loaded for %d collections in %.2fs", len(report), time.perf_counter() - started)
    return report
