"""Progressive backfill: where a collection's items stand, and which to re-embed next.

Re-embedding is the client's job (it owns the encoders); the service reports counts per version
and suggests an order. With an active transformation from an item's model toward the target, items
are ordered by the bundle's predicted transformation error, highest first (adapters/reliability.py,
FastFill's idea: fix the least reliable representations first). Without one, older versions come
first, then insertion order. Scoring reads every not-yet-migrated vector once (O(n·d)); the result
is cached until the collection or the active transformations change.
"""

from __future__ import annotations

import heapq
import threading

import numpy as np

from service.core.catalog import Catalog
from service.core.transform_graph import TransformGraph
from service.store import CollectionRecord, ModelRecord, Store

_CHUNK = 20_000


class Backfill:
    def __init__(self, store: Store, catalog: Catalog, transforms: TransformGraph) -> None:
        self.store = store
        self.catalog = catalog
        self.transforms = transforms
        self._cache: dict[tuple, list[tuple[float, int, int]]] = {}
        self._lock = threading.Lock()

    def report(self, collection: CollectionRecord, target: ModelRecord | None, limit: int) -> dict:
        base = self.catalog.model_by_id(collection.base_model_id)
        lineage = self.catalog.lineage(base)
        target = target or lineage[-1]
        counts = self.store.item_counts(collection.id)
        retired = self.store.retired_models(collection.id)
        total = sum(counts.values())
        migrated = counts.get(target.id, 0)
        ranked, order = self._ranking(collection, target, counts, limit)
        keys = self.store.hits_by_id(collection.id, [row_id for _, row_id, _ in ranked], with_payload=False)
        suggested = [
            {"id": keys[row_id].key, "model": self.catalog.model_by_id(mid).name,
             "predicted_error": None if np.isnan(err) else float(err)}
            for err, row_id, mid in ranked if row_id in keys
        ]
        return {
            "collection": collection.name,
            "target": target.name,
            "items": total,
            "migrated": migrated,
            "progress": migrated / total if total else 1.0,
            "models": [{"model": m.name, "items": counts.get(m.id, 0), "retired": m.id in retired} for m in lineage],
            "order": order,
            "suggested": suggested,
        }

    def _ranking(self, collection: CollectionRecord, target: ModelRecord, counts: dict[int, int], limit: int):
        current = self.store.get_collection(collection.name)
        table = self.transforms.table
        key = (collection.id, current.seq if current else None, table.fingerprint, target.id, limit)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        best: list[tuple[float, int, int]] = []  # min-heap of (error, -row id, model) keeps the top `limit`
        used_model = False
        for mid in sorted(m for m in counts if m != target.id):
            route = table.route(mid, target.id)
            predictor = route.edges[0].bundle.reliability if route is not None and route.edges else None
            dim = self.catalog.model_by_id(mid).dim
            ids = self.store.partition_ids(collection.id, mid, current_only=True)
            for start in range(0, len(ids), _CHUNK):
                found, vectors = self.store.vectors_by_id(collection.id, mid, ids[start : start + _CHUNK].tolist(), dim)
                if predictor is not None:
                    errors = predictor.predict_error(vectors)
                    used_model = True
                else:  # older model and lower id first: encode as a large, decreasing "error"
                    errors = np.full(len(found), np.nan)
                for err, row_id in zip(errors, found, strict=True):
                    rank = (float(err) if not np.isnan(err) else 1e9 - mid, -int(row_id), mid)
                    if len(best) < limit:
                        heapq.heappush(best, rank)
                    elif best and rank > best[0]:  # limit 0: progress only, no suggestions
                        heapq.heapreplace(best, rank)
        ordered = sorted(best, reverse=True)
        ranked = [(err if err < 1e8 else float("nan"), -neg_id, mid) for err, neg_id, mid in ordered]
        order = ("predicted transformation error, highest first" if used_model
                 else "oldest model version first, then insertion order")
        with self._lock:
            self._cache = {key: (ranked, order)}
        return ranked, order
