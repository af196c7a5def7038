"""Gallery operations: durable writes mirrored into the index, and queries over partitions.

Write path (per collection, serialised by a lock so the index sees changes in commit order):
1. validate everything, 2. commit the batch to the database (this is the durability point),
3. mirror it into the index atomically (remove replaced vectors, add new ones).
If the process dies between 2 and 3, start-up reconciliation (`service.core.index_sync`) repairs the
index from the database, so an acknowledged write is never lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from index import IndexBackend, IndexSpec, PartitionKey, PartitionState, PartitionWrite, SearchResult
from service.core.catalog import Catalog
from service.core.errors import Conflict, Invalid, NotFound, Unavailable
from service.core.filtered import FilterPlan, drop_unmatched
from service.core.hit_cache import HitCache
from service.core.index_sync import reconcile_collection, repair_dead_writes
from service.core.merge import PartitionHits, Reach, merge_row
from service.core.rerank import rescore_exactly
from service.core.transform_graph import Route, TransformGraph
from service.store import CollectionRecord, HitRecord, ItemRecord, ModelRecord, Store, UpsertOutcome, filters

log = logging.getLogger(__name__)


@dataclass
class ScoredHit:
    key: str
    score: float
    model_id: int
    payload: dict | None


@dataclass
class SearchedPartition:
    items: int
    route: Route


@dataclass(frozen=True)
class QueryPlan:
    """A query bound to its arguments, and whether it is cheap enough to run on the event loop."""

    run: Callable[[], QueryOutcome]
    inline: bool


@dataclass
class QueryOutcome:
    hits: list[list[ScoredHit]]
    searched: dict[int, SearchedPartition] = field(default_factory=dict)  # model id -> how
    skipped: dict[int, int] = field(default_factory=dict)  # model id -> items (no route)
    filter_plan: dict | None = None  # with a filter: how it ran (filtered.FilterPlan.report)


class IndexBehind(Unavailable):
    """A committed write the index could not take, nor be repaired for (the engine is down)."""


class Gallery:
    """`journal_writes`: the engine is shared by several processes (Milvus), so every write holds the
    collection's cross-process index-writer lock and is journalled until the engine has it.

    `follow_other_writers`: other processes write this collection too (service replicas over one
    database and one Milvus), so the hit cache also drops records of items they changed: at most
    every `follow_seconds` a query compares the collection's change counter with the one it saw
    last and invalidates the items written since (one primary-key read when nothing changed)."""

    def __init__(self, store: Store, catalog: Catalog, backend: IndexBackend, transforms: TransformGraph,
                 hit_cache_items: int = 0, inline_search_work: int = 0, follow_other_writers: bool = False,
                 follow_seconds: float = 1.0, journal_writes: bool = False) -> None:
        self.store = store
        self.catalog = catalog
        self.backend = backend
        self.transforms = transforms
        self.hits = HitCache(hit_cache_items)
        self.follow_other_writers = follow_other_writers and self.hits.enabled
        self.follow_seconds = follow_seconds
        self._seen_seq: dict[int, tuple[int, float]] = {}  # collection -> (change counter, checked at)
        self.journal_writes = journal_writes
        self.ready = threading.Event()
        self._write_locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.inline_search_work = inline_search_work
        self.on_write: Callable[[], None] | None = None  # after every index write (heap_trim.py)

    def write_lock(self, collection_id: int) -> threading.Lock:
        with self._locks_guard:
            return self._write_locks.setdefault(collection_id, threading.Lock())

    def ensure_partition(self, collection: CollectionRecord, model: ModelRecord) -> PartitionKey:
        key = PartitionKey(collection.id, model.id)
        self.backend.ensure_partition(key, model.dim, model.metric, IndexSpec.from_dict(collection.index_spec))
        return key

    def model_dims(self) -> dict[int, tuple[int, str]]:
        return {m.id: (m.dim, m.metric) for m in self.catalog.models()}

    def _require_ready(self) -> None:
        if not self.ready.is_set():
            raise Unavailable("indexes are still loading; retry shortly")

    # ---- writes -------------------------------------------------------------------------------
    def upsert(
        self,
        collection: CollectionRecord,
        model: ModelRecord,
        keys: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict | None],
        keep_previous: bool = True,
    ) -> UpsertOutcome:
        """Write a batch durably, then mirror it into the index.

        `keep_previous` (a re-embedding, the default) leaves an existing item's vectors in the
        collection's other, older versions searchable: clients still on those versions are served
        from their own model's vector, so their quality never drops while the gallery migrates
        (the storage cost is one extra vector per migrated item until the old version is retired).
        Versions newer than the written one are never kept.
        """
        self._require_ready()
        if not keys:
            raise Invalid("must contain at least one item", "items")
        seen: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key in seen:
                raise Invalid(f"id {key!r} appears twice in one batch (also at items[{seen[key]}])", f"items[{i}].id")
            seen[key] = i
        with self.write_lock(collection.id), self._journaled(collection):  # retire() takes both too
            retired = self.store.retired_models(collection.id)
            if model.id in retired:
                raise Conflict(f"model {model.name!r} is retired in collection {collection.name!r}", "model")
            target = self.ensure_partition(collection, model)
            keep = self._keepable_models(collection, model, retired) if keep_previous else frozenset()
            outcome = self.store.upsert_items(collection.id, model.id, keys, vectors, payloads, keep)
            writes: dict[str, PartitionWrite] = {}
            for old_model_id, old_ids in outcome.replaced.items():
                if self.backend.has_partition(PartitionKey(collection.id, old_model_id)):
                    writes.setdefault(old_model_id, PartitionWrite()).remove = old_ids
            write = writes.setdefault(target.model, PartitionWrite())
            write.add_ids, write.add_vectors = outcome.ids, vectors
            self._mirror(collection, writes, outcome.tag)
            if self.hits.enabled:  # write-through: the first query to reach these items needs no SQL
                self.hits.replace(collection.id, {
                    int(row_id): HitRecord(key, model.id, payload, item_models)
                    for row_id, key, payload, item_models in zip(outcome.ids.tolist(), keys, payloads, outcome.models,
                                                                 strict=True)})
        return outcome

    def _keepable_models(self, collection: CollectionRecord, model: ModelRecord, retired: set[int]) -> frozenset[int]:
        """Versions whose vectors a re-embedding into `model` keeps: the collection's lineage less
        `model`, its successors and the `retired` versions."""
        base = self.catalog.model_by_id(collection.base_model_id)
        drop = self.catalog.descendants(model) | {model.id} | retired
        return frozenset(m.id for m in self.catalog.lineage(base) if m.id not in drop)

    def delete(self, collection: CollectionRecord, key: str) -> None:
        self._require_ready()
        with self.write_lock(collection.id), self._journaled(collection):
            removed = self.store.delete_item(collection.id, key)
            if removed is None:
                raise NotFound(f"no item {key!r} in collection {collection.name!r}", "id")
            model_ids, row_id, tag = removed
            writes = {mid: PartitionWrite(remove=np.array([row_id], dtype=np.int64)) for mid in model_ids
                      if self.backend.has_partition(PartitionKey(collection.id, mid))}
            self._mirror(collection, writes, tag)
            self.hits.invalidate(collection.id, [row_id])

    def retire(self, collection: CollectionRecord, model: ModelRecord) -> None:
        """Refuse while items are current in `model`; else mark it retired and drop its partition, with the
        vectors it kept for items since re-embedded."""
        with self.write_lock(collection.id), self._journaled(collection):
            remaining = self.store.retire_model(collection.id, model.id)
            if remaining:
                raise Conflict(f"{remaining} item(s) of collection {collection.name!r} are still in model "
                               f"{model.name!r}; re-embed them before retiring it", "model")
            pkey = PartitionKey(collection.id, model.id)
            if self.backend.has_partition(pkey):
                self.backend.drop_partition(pkey)
            self.hits.invalidate_collection(collection.id)  # cached records list the retired version

    @contextmanager
    def _journaled(self, collection: CollectionRecord) -> Iterator[None]:
        """On a shared engine, hold the collection's cross-process index-writer lock, repair what a
        dead writer left half-done, and journal this write until the engine has it (store/journal.py).

        The entry is cleared on an ordinary exception too: either nothing was committed, or
        `_mirror` has already repaired the engine from the store. Only a dying process leaves it.
        """
        if not self.journal_writes:
            yield
            return
        with self.store.index_writer(collection.id) as journal:
            repair_dead_writes(journal, self.store, self.backend, collection, self.model_dims())
            entry = journal.begin_write()
            try:
                yield
            except IndexBehind:
                raise  # committed, not in the engine: the entry stays for whoever repairs it
            except Exception:
                journal.clear([entry])
                raise
            journal.clear([entry])

    def _mirror(self, collection: CollectionRecord, writes: dict[int, PartitionWrite], tag: int) -> None:
        """Apply committed changes to the index; on failure repair the collection from the store.

        If the repair fails too (the engine is down), the write is committed but not searchable:
        the client gets a 503 (not an acknowledgement: a retry rewrites the same items), and on a
        shared engine the journal entry stays, so the next writer or a start-up repairs it."""
        try:
            self.backend.apply(collection.id, writes, tag)
        except Exception:
            log.exception("index update failed for collection %s; reconciling from the store", collection.name)
            try:
                reconcile_collection(self.store, self.backend, collection, self.model_dims())
            except Exception as exc:
                log.exception("repair of collection %s failed; it is repaired by the next write or restart",
                              collection.name)
                raise IndexBehind(f"the index of collection {collection.name!r} is unavailable; the write was "
                                  "stored but is not searchable yet: retry it") from exc
        finally:
            if self.on_write is not None:
                self.on_write()

    _FOLLOW_LIMIT = 10_000  # more changed items than this since the last look: drop the collection's records

    def _follow(self, collection_id: int) -> None:
        """Invalidate cached records of items other processes wrote since this process last looked."""
        now = time.monotonic()
        seen = self._seen_seq.get(collection_id)
        if seen is not None and now - seen[1] < self.follow_seconds:
            return
        current = self.store.collection_seq(collection_id) or 0
        if seen is None:
            self.hits.invalidate_collection(collection_id)  # records cached before we followed
        elif current != seen[0]:
            changed = self.store.items_changed_after(collection_id, seen[0], self._FOLLOW_LIMIT)
            if changed is None:
                self.hits.invalidate_collection(collection_id)
            else:
                self.hits.invalidate(collection_id, changed)
        self._seen_seq[collection_id] = (current, now)

    def _refresh_contradicted(self, collection_id: int, results: dict, records: dict[int, HitRecord]) -> None:
        """Re-read records the engine contradicts: a hit from a partition its cached record does
        not list means another process moved the item since the record was cached. Without this,
        an item another replica just moved (dropping its old vector) would be missed until the
        next follow: its only hit would be dropped as coming from the wrong partition."""
        stale = {int(i) for mid, r in results.items() for i in r.ids.ravel()
                 if i >= 0 and (rec := records.get(int(i))) is not None and mid not in rec.models}
        if stale:
            self.hits.invalidate(collection_id, stale)
            records.update(self.store.hits_by_id(collection_id, sorted(stale)))

    # ---- reads --------------------------------------------------------------------------------
    def search_partition(self, collection: CollectionRecord, model_id: int, queries: np.ndarray,
                         k: int) -> SearchResult:
        """Top k of one partition for queries already in its space, ranked exactly as a query's
        routed search ranks them (re-scoring included); for the backfill order (backfill.py)."""
        self._require_ready()
        return self._search(collection, {model_id: queries}, k)[model_id]

    def get_item(self, collection: CollectionRecord, key: str) -> ItemRecord:
        item = self.store.get_item(collection.id, key, lambda mid: self.catalog.model_by_id(mid).dim)
        if item is None:
            raise NotFound(f"no item {key!r} in collection {collection.name!r}", "id")
        return item

    def partition_sizes(self, collection: CollectionRecord) -> dict[int, int]:
        """Live vectors per model id, as the index currently holds them (empty partitions left out)."""
        return {model: n for model, n in self.backend.sizes(collection.id).items() if n}

    def partition_states(self, collection: CollectionRecord) -> dict[int, PartitionState]:
        """Per model id: the index structure searched now and whether a rebuild is running."""
        return {pkey.model: self.backend.state(pkey) for pkey in self.backend.partitions(collection.id)}

    def search_work(self, collection: CollectionRecord, sizes: dict[int, int], n_queries: int) -> int:
        """Rough multiply-add count of a search over the partitions in `sizes`."""
        return sum(n_queries * self.backend.search_cost(PartitionKey(collection.id, mid)) for mid in sizes)

    def plan_query(self, collection: CollectionRecord, model: ModelRecord, queries: np.ndarray, k: int,
                   include_payload: bool = True, where: filters.Node | None = None) -> QueryPlan:
        """A query ready to run, with where it should run.

        Small searches run on the caller's event loop: a thread-pool hop costs more than a
        sub-millisecond FAISS search. Searches estimated above `inline_search_work` multiply-adds
        (big flat partitions, big batches) are marked for the thread pool, so the loop keeps
        serving other requests and FAISS, which releases the GIL, can use every core.
        """
        sizes = self.partition_sizes(collection)
        inline = where is None and self.search_work(collection, sizes, len(queries)) <= self.inline_search_work
        return QueryPlan(partial(self.query, collection, model, queries, k, include_payload, sizes, where), inline)

    def query(
        self,
        collection: CollectionRecord,
        model: ModelRecord,
        queries: np.ndarray,
        k: int,
        include_payload: bool = True,
        sizes: dict[int, int] | None = None,
        where: filters.Node | None = None,
    ) -> QueryOutcome:
        """Search every partition the query model can reach and merge into one ranking.

        Each partition is searched with the query brought into its space along the best active
        route (transform_graph.py), its scores put on the query model's scale, and the lists merged
        with every item served from its best representation (merge.py). Partitions without a
        route are reported as skipped; if nothing is reachable the query is a 409 rather than a
        silently empty answer.

        `where` (a payload filter) keeps only matching items (filtered.py): a first search drops
        non-matching hits; short of k, it searches wider if the filter looks broad, or reads the
        matching ids from SQL and searches only those if it looks selective.
        """
        self._require_ready()
        sizes = self.partition_sizes(collection) if sizes is None else sizes
        table = self.transforms.table  # one snapshot for the whole query (activation swaps it atomically)
        outcome = QueryOutcome(hits=[[] for _ in range(len(queries))])
        for mid, n in sizes.items():
            route = table.route(model.id, mid)
            if route is None:
                outcome.skipped[mid] = n
            else:
                outcome.searched[mid] = SearchedPartition(n, route)
        if not outcome.searched and outcome.skipped:
            names = ", ".join(self.catalog.model_by_id(m).name for m in outcome.skipped)
            raise Conflict(
                f"collection {collection.name!r} holds no vectors in model {model.name!r} and there is no "
                f"active transformation from {model.name!r} to its stored models ({names})",
                "model",
            )
        if not outcome.searched:
            return outcome
        per_partition = {
            mid: (part.route.apply(queries) if part.route.edges else queries) for mid, part in outcome.searched.items()
        }
        reach = {mid: Reach(part.route.quality, part.route.ratios, part.route.holdout_pairs)
                 for mid, part in outcome.searched.items()}
        searched_sizes = {mid: part.items for mid, part in outcome.searched.items()}
        plan = None if where is None else FilterPlan.start(k, max(searched_sizes.values()), self.backend.max_k,
                                                             self.backend.max_allowed_ids)
        while True:
            results = self._search(collection, per_partition, k if plan is None else plan.fetch,
                                   None if plan is None else plan.allowed, 1.0 if plan is None else plan.effort)
            for mid, result in results.items():
                route = outcome.searched[mid].route
                if route.edges:
                    result.scores = route.score_map(result.scores)
            records = self._records(collection.id, results)
            matched, examined = (0, 0) if where is None else drop_unmatched(results, records, where)
            for qi in range(len(queries)):
                parts = {mid: PartitionHits(mid, r.ids[qi], r.scores[qi]) for mid, r in results.items()}
                merged = merge_row(model.id, parts, reach, searched_sizes, records, k)
                outcome.hits[qi] = [ScoredHit(records[h.item_id].key, h.score, h.model_id,
                                              records[h.item_id].payload if include_payload else None)
                                    for h in merged]
            if plan is None:
                return outcome
            if not plan.next_search(outcome.hits, matched, examined,
                                    partial(self.store.matching_item_ids, collection.id, where)):
                outcome.filter_plan = plan.report()
                return outcome

    def _search(self, collection: CollectionRecord, per_partition: dict[int, np.ndarray], k: int,
                allowed: np.ndarray | None = None, effort: float = 1.0) -> dict:
        """The backend's top k per partition; on quantised partitions with `ivf_rerank`, the top k
        of a deeper candidate list re-scored on the stored full vectors (rerank.py)."""
        depth = IndexSpec.from_dict(collection.index_spec).rerank_depth(k, self.backend.max_k)
        results = self._backend_search(collection, per_partition, depth, allowed, effort)
        if depth == k:
            return results
        out = {}
        for mid, result in results.items():
            model = self.catalog.model_by_id(mid)
            stored = partial(self.store.vectors_by_id, collection.id, mid, dim=model.dim)
            out[mid] = rescore_exactly(per_partition[mid], result, stored, model.metric, k)
        return out

    def _backend_search(self, collection: CollectionRecord, per_partition: dict[int, np.ndarray], k: int,
                        allowed: np.ndarray | None, effort: float) -> dict:
        try:
            return self.backend.search(collection.id, per_partition, k, allowed, effort)
        except (ValueError, KeyError):
            raise
        except Exception as exc:  # a remote engine down or unreachable (Milvus): retryable, not a bug
            if not self.backend.durable:
                raise
            raise Unavailable(f"the index of collection {collection.name!r} is unavailable: {type(exc).__name__}") \
                from exc

    def _records(self, collection_id: int, results: dict) -> dict[int, HitRecord]:
        """The database's records of every hit (cached), brought up to date with other writers."""
        found = np.unique(np.concatenate([r.ids.ravel() for r in results.values()]))
        wanted = found[found >= 0].tolist()
        if self.follow_other_writers:
            self._follow(collection_id)
        records = self.hits.resolve(collection_id, wanted, lambda ids: self.store.hits_by_id(collection_id, ids))
        if self.follow_other_writers:
            self._refresh_contradicted(collection_id, results, records)
        return records

