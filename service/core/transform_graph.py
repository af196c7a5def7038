"""Which representation a query takes to reach each partition: active transformations as a graph.

Every active upgrade A -> B contributes two edges: B -> A (the compatibility transformation, for
new-model queries against old vectors) and A -> B (the reverse map, for old-model queries against
re-embedded items). A query in model Q reaches a partition in model P along the path whose
measured quality (the product over its edges of the share of the query model's retrieval quality
each map keeps, from the held-out evaluation) is highest; a direct transformation wins over a
chain exactly when it measured better. Scores found along a route are put on Q's scale by the
edges' score maps, applied from the partition back to the query (calibration.py).

A `RouteTable` is immutable; the service swaps in a new one on activation or rollback, so a
query in flight finishes on the table it started with and the next one sees the new state.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from adapters.bundle import UpgradeBundle
from adapters.calibration import IDENTITY, ScoreMap
from adapters.migration import METRICS
from service.core.bundle_files import bundle_directory
from service.store import Store, UpgradeRecord

log = logging.getLogger(__name__)

MAX_ROUTE_EDGES = 6


@dataclass(frozen=True)
class Edge:
    src: int  # model id the vectors come from
    dst: int  # model id whose space they land in
    upgrade_id: int
    transformation_id: int
    bundle: UpgradeBundle = field(repr=False, compare=False)
    direction: str  # "new->old" | "old->new"

    def apply(self, x: np.ndarray) -> np.ndarray:
        out = self.bundle.new_to_old(x) if self.direction == "new->old" else self.bundle.old_to_new(x)
        return np.ascontiguousarray(out, dtype=np.float32)

    @property
    def scores(self) -> ScoreMap:
        return self.bundle.new_old_scores if self.direction == "new->old" else self.bundle.old_new_scores

    @property
    def quality(self) -> float:
        return self.bundle.quality(self.direction)


@dataclass(frozen=True)
class Route:
    edges: tuple[Edge, ...]

    @property
    def native(self) -> bool:
        return not self.edges

    @property
    def quality(self) -> float:
        q = 1.0
        for e in self.edges:
            q *= e.quality
        return q

    @cached_property
    def ratios(self) -> dict[str, float]:
        """`quality` per metric (top-1, mAP@R): products over the edges."""
        out = dict.fromkeys(METRICS, 1.0)
        for e in self.edges:
            for metric, r in e.bundle.ratios(e.direction).items():
                out[metric] *= r
        return out

    @cached_property
    def holdout_pairs(self) -> int:
        """The thinnest held-out evidence behind any edge (for trusting `ratios` above 1)."""
        return min((e.bundle.holdout_pairs for e in self.edges), default=1 << 62)

    def apply(self, queries: np.ndarray) -> np.ndarray:
        for e in self.edges:
            queries = e.apply(queries)
        return queries

    @property
    def score_map(self) -> ScoreMap:
        """Partition-side scores -> query-model scale: innermost (last) edge first."""
        out = IDENTITY
        for e in reversed(self.edges):
            out = out.then(e.scores)
        return out


NATIVE = Route(())


class RouteTable:
    def __init__(self, edges: list[Edge], fingerprint: tuple = ()) -> None:
        self.edges = edges
        self.fingerprint = fingerprint
        self._out: dict[int, list[Edge]] = {}
        for e in edges:
            self._out.setdefault(e.src, []).append(e)
        self._cache: dict[tuple[int, int], Route | None] = {}
        self._lock = threading.Lock()

    def route(self, query_model: int, partition_model: int) -> Route | None:
        if query_model == partition_model:
            return NATIVE
        key = (query_model, partition_model)
        if key not in self._cache:
            found = self._best_path(query_model, partition_model)
            with self._lock:
                self._cache[key] = found
        return self._cache[key]

    def _best_path(self, src: int, dst: int) -> Route | None:
        best: Route | None = None

        def walk(node: int, path: list[Edge], seen: set[int]) -> None:
            nonlocal best
            if node == dst:
                candidate = Route(tuple(path))
                if best is None or candidate.quality > best.quality:
                    best = candidate
                return
            if len(path) >= MAX_ROUTE_EDGES:
                return
            for e in self._out.get(node, []):
                if e.dst not in seen:
                    walk(e.dst, [*path, e], seen | {e.dst})

        walk(src, [], {src})
        return best


def load_table(store: Store, data_dir: Path, cache: dict[int, UpgradeBundle] | None = None) -> RouteTable:
    """Build the table from the active transformations (bundles are loaded once and reused)."""
    cache = cache if cache is not None else {}
    fingerprint = store.serving_fingerprint()
    edges: list[Edge] = []
    for up in store.list_upgrades():
        if up.active_transformation_id is None:
            continue
        bundle = _bundle(store, data_dir, up, cache)
        if bundle is None:
            continue
        tid = up.active_transformation_id
        edges.append(Edge(up.new_model_id, up.old_model_id, up.id, tid, bundle, "new->old"))
        edges.append(Edge(up.old_model_id, up.new_model_id, up.id, tid, bundle, "old->new"))
    return RouteTable(edges, fingerprint)


def _bundle(store: Store, data_dir: Path, up: UpgradeRecord, cache: dict[int, UpgradeBundle]) -> UpgradeBundle | None:
    tid = up.active_transformation_id
    if tid in cache:
        return cache[tid]
    record = store.get_transformation(tid)
    try:
        bundle = UpgradeBundle.load(bundle_directory(store, data_dir, record))
    except Exception:
        log.exception("cannot load transformation %s of upgrade %s; its partitions stay unreachable", tid, up.id)
        return None
    cache[tid] = bundle
    return bundle


class TransformGraph:
    """Holds the current table; reloads it on activation here or, for changes made by another process
    (a separate worker), when the stored fingerprint moves (checked every `refresh_seconds`)."""

    def __init__(self, store: Store, data_dir: Path, refresh_seconds: float = 2.0) -> None:
        self.store = store
        self.data_dir = data_dir
        self.refresh_seconds = refresh_seconds
        self.table = RouteTable([])
        self._bundles: dict[int, UpgradeBundle] = {}
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reload(self) -> RouteTable:
        with self._reload_lock:
            table = load_table(self.store, self.data_dir, self._bundles)
            self.table = table  # one reference assignment: atomic for readers
            active = {e.transformation_id for e in table.edges}
            self._bundles = {tid: b for tid, b in self._bundles.items() if tid in active}  # free retired ones
            return table

    def start(self) -> None:
        self.reload()
        self._thread = threading.Thread(target=self._watch, name="nobackfill-routing", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                if self.store.serving_fingerprint() != self.table.fingerprint:
                    self.reload()
            except Exception:
                log.exception("routing refresh failed; will retry")
