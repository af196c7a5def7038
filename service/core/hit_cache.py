"""An in-memory cache of search hits' item records (key, payload), so a query needs no SQL round trip.

The profile of a served HNSW query (bench/profile_query.py) showed the primary-key lookup of the
hits' keys and payloads taking more of the server's time (~21 %) than the FAISS search (~18 %).
Item row ids are stable for an item's life and a key never changes for an id, so records can be
cached per (collection, row id); what can change is the payload (an upsert) or the item's
existence (a delete), and writers invalidate those ids after their commit.

A fill races with a write when the database read happened before the write committed but the fill
lands after the invalidation; each collection therefore has a write generation, bumped by every
invalidation, and a fill is dropped when the generation moved since its read began.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from cachetools import LRUCache

from service.store import HitRecord


class HitCache:
    def __init__(self, max_items: int) -> None:
        self._cache: LRUCache[tuple[int, int], HitRecord] = LRUCache(maxsize=max(1, max_items))
        self._generation: dict[int, int] = {}
        self._lock = threading.Lock()
        self.enabled = max_items > 0

    def invalidate(self, collection_id: int, ids: Iterable[int]) -> None:
        with self._lock:
            self._generation[collection_id] = self._generation.get(collection_id, 0) + 1
            for row_id in ids:
                self._cache.pop((collection_id, int(row_id)), None)

    def replace(self, collection_id: int, records: dict[int, HitRecord]) -> None:
        """Records a writer has just committed (write-through): invalidate, then store them.

        The writer holds the collection's write lock, so no later write of these ids is in
        between; a concurrent fill that read the database before the commit sees the generation
        bumped here and is dropped. Without this, the first query to reach each newly ingested
        item pays a database read (the first pass after an ingest ran ~1.5x slower at p95)."""
        with self._lock:
            self._generation[collection_id] = self._generation.get(collection_id, 0) + 1
            for row_id, record in records.items():
                self._cache[(collection_id, int(row_id))] = record

    def invalidate_collection(self, collection_id: int) -> None:
        """Forget every cached record of a collection (a retirement drops kept vectors wholesale)."""
        with self._lock:
            self._generation[collection_id] = self._generation.get(collection_id, 0) + 1
            for key in [key for key in self._cache if key[0] == collection_id]:
                self._cache.pop(key, None)

    def resolve(
        self, collection_id: int, ids: list[int], load: Callable[[list[int]], dict[int, HitRecord]]
    ) -> dict[int, HitRecord]:
        """Records for `ids` (absent: deleted items), from the cache and `load` for the misses."""
        if not self.enabled:
            return load(ids)
        found: dict[int, HitRecord] = {}
        missing: list[int] = []
        with self._lock:
            generation = self._generation.get(collection_id, 0)
            for row_id in ids:
                record = self._cache.get((collection_id, row_id))
                if record is None:
                    missing.append(row_id)
                else:
                    found[row_id] = record
        if missing:
            loaded = load(missing)
            found.update(loaded)
            with self._lock:
                if self._generation.get(collection_id, 0) == generation:
                    for row_id, record in loaded.items():
                        self._cache[(collection_id, row_id)] = record
        return found
