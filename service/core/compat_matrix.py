"""The compatibility matrix of a lineage: M(query model i, gallery model j) for every pair of versions.

Probe set: items whose vectors are known in *every* version -- uploaded pairs joined across the
lineage's upgrades by their ids (send the same ids when uploading pairs for v1->v2 and v2->v3).
Each cell embeds the probe queries with model i, brings them into model j's space along the route
the service itself would take (service/routing.py; no route: the cell is empty), and retrieves
among the probe items' model-j vectors, leave-one-out. Relevance: same label when every probe item
has one, else the consensus neighbourhood of the oldest and newest versions (adapters/metrics.py).
AC and AM follow methods.md on the lower triangle (new queries, old galleries). The probe items are
training pairs, so off-diagonal cells are optimistic next to each upgrade's held-out evaluation;
the response says so. Results are cached until the routing or the pair counts change.
"""

from __future__ import annotations

import threading

import numpy as np

from adapters.evaluate import PRIMARY
from adapters.metrics import compatibility_summary, consensus_neighbours, neighbour_metrics, retrieval_metrics
from service.core.catalog import Catalog
from service.core.transform_graph import TransformGraph
from service.store import ModelRecord, Store

MIN_PROBE = 20


class CompatibilityMatrix:
    def __init__(self, store: Store, catalog: Catalog, transforms: TransformGraph, max_items: int = 2_000) -> None:
        self.store = store
        self.catalog = catalog
        self.transforms = transforms
        self.max_items = max_items
        self._cache: dict[tuple, dict] = {}
        self._lock = threading.Lock()

    def compute(self, model: ModelRecord) -> dict:
        lineage = self.catalog.lineage(model)
        ids = {m.id for m in lineage}
        upgrades = [u for u in self.store.list_upgrades() if u.old_model_id in ids and u.new_model_id in ids]
        table = self.transforms.table
        key = (tuple(m.id for m in lineage), table.fingerprint,
               tuple(self.store.pair_counts(u)["uploaded"] for u in upgrades))
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        vectors, labels = self._probe(lineage, upgrades)
        names = [m.name for m in lineage]
        out: dict = {"models": names, "metric": PRIMARY, "items": 0, "matrix": None, "AC": None, "AM": None,
                     "relevance": None,
                     "note": "probe items are uploaded training pairs shared by every upgrade of the lineage; "
                             "off-diagonal cells are optimistic next to held-out evaluations"}
        if vectors is None:
            out["reason"] = (f"fewer than {MIN_PROBE} pair ids are shared by every upgrade of the lineage; upload "
                             f"pairs with the same ids for each upgrade to get a matrix")
        else:
            n = len(next(iter(vectors.values())))
            if labels is None:
                relevance = consensus_neighbours(vectors[lineage[0].id], vectors[lineage[-1].id])
            matrix: list[list[float | None]] = []
            for q in lineage:
                row: list[float | None] = []
                for g in lineage:
                    route = table.route(q.id, g.id)
                    if route is None:
                        row.append(None)
                        continue
                    queries = route.apply(vectors[q.id]) if route.edges else vectors[q.id]
                    m = (retrieval_metrics(queries, vectors[g.id], labels) if labels is not None
                         else neighbour_metrics(queries, vectors[g.id], relevance))
                    row.append(float(m.as_dict()[PRIMARY]))
                matrix.append(row)
            lower = [[c if c is not None else 0.0 for c in row[: i + 1]] for i, row in enumerate(matrix)]
            summary = compatibility_summary(lower) if len(lineage) > 1 else {"AC": None, "AM": None}
            out.update(items=n, matrix=matrix, relevance="label" if labels is not None else "consensus-neighbours",
                       AC=_finite(summary["AC"]), AM=_finite(summary["AM"]))
        with self._lock:
            self._cache = {key: out}
        return out

    def _probe(self, lineage: list[ModelRecord], upgrades) -> tuple[dict[int, np.ndarray] | None, np.ndarray | None]:
        if len(lineage) < 2 or not upgrades:
            return None, None
        by_key: dict[str, dict[int, np.ndarray]] = {}
        label_of: dict[str, str] = {}
        for up in upgrades:
            d_old = self.catalog.model_by_id(up.old_model_id).dim
            d_new = self.catalog.model_by_id(up.new_model_id).dim
            keys, old, new, labels = self.store.keyed_pairs(up, d_old, d_new)
            for i, k in enumerate(keys):
                slot = by_key.setdefault(k, {})
                slot[up.old_model_id], slot[up.new_model_id] = old[i], new[i]
                if labels[i] is not None:
                    label_of[k] = labels[i]
        wanted = {m.id for m in lineage}
        common = sorted(k for k, v in by_key.items() if wanted <= set(v))
        if len(common) < MIN_PROBE:
            return None, None
        if len(common) > self.max_items:
            pick = np.random.default_rng(0).choice(len(common), self.max_items, replace=False)
            common = [common[i] for i in sorted(pick)]
        vectors = {m.id: np.stack([by_key[k][m.id] for k in common]) for m in lineage}
        labels = np.array([label_of[k] for k in common]) if all(k in label_of for k in common) else None
        return vectors, labels


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)
