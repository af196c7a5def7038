"""Progressive backfill: where a collection's items stand, and which to re-embed next.

Re-embedding is the client's job (it owns the encoders); the service reports counts per version
and suggests an order. Items of a model version the target's queries cannot reach (no active
transformation between them) come first, oldest version first. Items of a version with
transformations both ways are ordered by how often target-model queries, routed into that
version, retrieve them (adapters/backfill_order.py): a sample of the partition's own vectors is
taken to the target model and back and searched through the partition's index, exactly as a routed
query is; an item's count is how many of those proxy queries hold it in their top 10. Re-embedding
the most-retrieved items first hands the most top positions to the new model's own ranking
(the slot merge), so quality moves toward the re-embedded end with fewer re-embeddings than a
random order (docs/benchmarks.md). Ties, and versions with no usable route, go by insertion order.

Cost: the proxy search is bounded (`PROXY_WORK` multiply-adds, between `MIN_PROXIES` and
`MAX_PROXIES` queries) and its counts are cached per partition until the partition's size moves
by more than 5 % or the active transformations change; a report otherwise reads only the ids that
remain to migrate (and the vectors of the items it suggests, for their predicted error).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from adapters.backfill_order import ROUTED_DEPTH, counted_hits, hit_counts, round_trip, sample_rows, tally
from index import PartitionKey
from service.core.catalog import Catalog
from service.core.gallery import Gallery
from service.core.transform_graph import Route, RouteTable
from service.store import CollectionRecord, ModelRecord, Store

PROXY_WORK = 20 * 10**9  # multiply-adds one partition's proxy search may spend
MIN_PROXIES, MAX_PROXIES = 1_000, 20_000
REFRESH_GROWTH = 0.05  # recount when a partition's size moved by more than this share
_SEARCH_CHUNK = 1_024
_READ_CHUNK = 20_000
UNREACHABLE, BY_HITS, BY_INSERTION = 0, 1, 2  # groups of the suggested order, first to last


@dataclass(frozen=True)
class RoutedHits:
    """The proxy search's tally for one partition (sorted ids, counts) and the partition size it
    was made on (to tell when it is stale)."""

    tallied: tuple[np.ndarray, np.ndarray]
    partition_items: int


class Backfill:
    def __init__(self, store: Store, catalog: Catalog, gallery: Gallery) -> None:
        self.store = store
        self.catalog = catalog
        self.gallery = gallery
        self.transforms = gallery.transforms
        self._ranked: dict[tuple, tuple[list[tuple[int, int, int | None]], str]] = {}
        self._hits: dict[tuple, RoutedHits] = {}
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
        keys = self.store.hits_by_id(collection.id, [row_id for row_id, _, _ in ranked], with_payload=False)
        errors = self._predicted_errors(collection, target, ranked)
        suggested = [
            {"id": keys[row_id].key, "model": self.catalog.model_by_id(mid).name, "routed_hits": hits,
             "predicted_error": errors.get(row_id)}
            for row_id, mid, hits in ranked if row_id in keys
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

    # ---- the order ------------------------------------------------------------------------------
    def _ranking(self, collection: CollectionRecord, target: ModelRecord, counts: dict[int, int],
                 limit: int) -> tuple[list[tuple[int, int, int | None]], str]:
        """The first `limit` items to re-embed: (row id, model id, routed hits or None)."""
        current = self.store.get_collection(collection.name)
        table = self.transforms.table
        key = (collection.id, current.seq if current else None, table.fingerprint, target.id, limit)
        with self._lock:
            if key in self._ranked:
                return self._ranked[key]
        columns: list[np.ndarray] = []  # per model: (group, model id, -hits, row id) rows
        by_hits = False
        for mid in sorted(m for m in counts if m != target.id):
            ids = self.store.partition_ids(collection.id, mid, current_only=True)
            routes = self._round_trip(table, mid, target.id)
            hits = np.zeros(len(ids), dtype=np.int64)
            if routes is None:
                reachable = table.route(target.id, mid) is not None
                group = BY_INSERTION if reachable else UNREACHABLE
            else:
                group, by_hits = BY_HITS, True
                if limit:  # limit 0 asks for progress only: no proxy search
                    hits = hit_counts(ids, self._routed_hits(collection, mid, target.id, table, routes).tallied)
            columns.append(np.stack([np.full(len(ids), group), np.full(len(ids), mid), -hits, ids], axis=1))
        rows = np.concatenate(columns) if columns else np.empty((0, 4), dtype=np.int64)
        first = rows[np.lexsort(rows.T[::-1])][:limit]
        ranked = [(int(row_id), int(mid), int(-neg) if group == BY_HITS else None)
                  for group, mid, neg, row_id in first.tolist()]
        order = (f"most retrieved first: how often target-model queries routed into the item's model (proxies: "
                 f"a sample of its items taken to the target and back) hold it in their top {ROUTED_DEPTH}"
                 if by_hits else "oldest model version first, then insertion order")
        with self._lock:
            self._ranked = {key: (ranked, order)}
        return ranked, order

    def _round_trip(self, table: RouteTable, mid: int, target: int) -> tuple[Route, Route] | None:
        """(the item's model -> target, target -> the item's model), when both are served."""
        there, back = table.route(mid, target), table.route(target, mid)
        if there is None or back is None or there.native or back.native:
            return None
        return there, back

    def _routed_hits(self, collection: CollectionRecord, mid: int, target: int, table: RouteTable,
                     routes: tuple[Route, Route]) -> RoutedHits:
        """The partition's tally, recounted when it is stale (module docstring)."""
        size = self.gallery.partition_sizes(collection).get(mid, 0)  # the index's count: no SQL read
        key = (collection.id, mid, target, table.fingerprint)
        with self._lock:
            cached = self._hits.get(key)
        if cached is not None and abs(size - cached.partition_items) <= REFRESH_GROWTH * cached.partition_items:
            return cached
        ids = self.store.partition_ids(collection.id, mid)  # current and kept vectors: what routed queries see
        model = self.catalog.model_by_id(mid)
        cost = max(self.gallery.backend.search_cost(PartitionKey(collection.id, mid)), 1)
        wanted = int(np.clip(PROXY_WORK // cost, MIN_PROXIES, MAX_PROXIES))
        sample = ids[sample_rows(len(ids), wanted, seed=collection.id)]
        counted: list[np.ndarray] = []
        for start in range(0, len(sample), _READ_CHUNK):
            found, vectors = self.store.vectors_by_id(collection.id, mid, sample[start : start + _READ_CHUNK].tolist(),
                                                      model.dim)
            proxies = round_trip(vectors, routes[0].apply, routes[1].apply)
            for s in range(0, len(found), _SEARCH_CHUNK):
                result = self.gallery.search_partition(collection, mid, proxies[s : s + _SEARCH_CHUNK],
                                                       ROUTED_DEPTH + 1)
                counted.append(counted_hits(result.ids, np.asarray(found[s : s + _SEARCH_CHUNK]), ROUTED_DEPTH))
        hits = RoutedHits(tally(np.concatenate(counted) if counted else np.empty(0, np.int64)), size)
        with self._lock:
            self._hits = {k: v for k, v in self._hits.items() if k[3] == table.fingerprint}
            self._hits[key] = hits
        return hits

    def _predicted_errors(self, collection: CollectionRecord, target: ModelRecord,
                          ranked: list[tuple[int, int, int | None]]) -> dict[int, float]:
        """The upgrade's predicted transformation error (reliability.py) of each suggested item
        whose model is the old side of an active upgrade toward the target."""
        table = self.transforms.table
        out: dict[int, float] = {}
        for mid in sorted({m for _, m, _ in ranked}):
            route = table.route(mid, target.id)
            if route is None or route.native or route.edges[0].direction != "old->new":
                continue
            model = self.catalog.model_by_id(mid)
            wanted = [row_id for row_id, m, _ in ranked if m == mid]
            found, vectors = self.store.vectors_by_id(collection.id, mid, wanted, model.dim)
            predicted = route.edges[0].bundle.reliability.predict_error(vectors)
            out.update(zip(np.asarray(found).tolist(), predicted.astype(float).tolist(), strict=True))
        return out
