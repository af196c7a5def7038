"""Graph search: a bare `IndexHNSWFlat` whose labels are *slots*, mapped to caller ids.

HNSW graphs cannot delete, so a removed vector's slot is marked dead and filtered out at search
time with an `IDSelectorBitmap`; the same id can be re-added in a fresh slot at once. The graph is
rebuilt without dead slots once they exceed a fifth of it (and at least 1,000).
"""

from __future__ import annotations

import faiss
import numpy as np

from index.faiss.partition import FaissPartition, exact_top_k, faiss_metric

_DEAD_COMPACT_FRACTION = 0.2
_DEAD_COMPACT_MIN = 1_000
EXACT_FILTER_MAX = 4_096  # at most this many allowed vectors: scored exactly (bench/filters.py)
MAX_FILTER_EF = 4_096


class HnswPartition(FaissPartition):
    kind = "hnsw"
    gpu_replicable = False

    def __init__(self, *args, **kwargs) -> None:
        self.slot_ids = np.empty(0, dtype=np.int64)  # slot -> caller id
        self.slot_live = np.empty(0, dtype=bool)
        self._slot_of: dict[int, int] = {}  # live caller id -> slot
        self._bitmap: np.ndarray | None = None  # packed slot_live, built lazily for searches
        super().__init__(*args, **kwargs)

    def _new_index(self) -> faiss.Index:
        index = faiss.IndexHNSWFlat(self.dim, self.spec.hnsw_m, faiss_metric(self.metric))
        index.hnsw.efConstruction = self.spec.hnsw_ef_construction
        index.hnsw.efSearch = self.spec.hnsw_ef_search
        return index

    def __len__(self) -> int:
        return len(self._slot_of)

    def live_ids(self) -> np.ndarray:
        return np.sort(self.slot_ids[self.slot_live])

    def live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        live = np.flatnonzero(self.slot_live)
        if not len(live):
            return np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
        return self.slot_ids[live].copy(), self.index.reconstruct_n(0, self.index.ntotal)[live]

    def _compared_per_query(self) -> float:
        return min(len(self), self.spec.hnsw_ef_search * self.spec.hnsw_m * 2)

    def _search_labels(self, q: np.ndarray, k: int, via: faiss.Index | None,
                       effort: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        ef = int(min(max(MAX_FILTER_EF, self.spec.hnsw_ef_search), self.spec.hnsw_ef_search * max(1.0, effort)))
        params = faiss.SearchParametersHNSW(efSearch=ef)
        if len(self._slot_of) < len(self.slot_live):  # some slots are dead
            if self._bitmap is None:
                self._bitmap = np.packbits(self.slot_live, bitorder="little")
            sel = faiss.IDSelectorBitmap(len(self.slot_live), faiss.swig_ptr(self._bitmap))
            params.sel = sel
            params._keep = (sel, self._bitmap)  # keep both alive while FAISS uses them
        scores, slots = self.index.search(q, k, params=params)
        return scores, np.where(slots >= 0, self.slot_ids[slots], -1)

    def _search_allowed(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Few allowed vectors: score them exactly (a filtered graph walk finds too few of them in
        `efSearch` steps). Many: walk the graph over a bitmap of their slots, with `efSearch`
        widened by the inverse of the allowed fraction so the walk collects as many candidates
        as an unfiltered one."""
        slots = np.fromiter((s for i in allowed.tolist() if (s := self._slot_of.get(i)) is not None), dtype=np.int64)
        if not len(slots):  # none of them in this partition (scores of id -1 are blanked by the caller)
            return np.zeros((len(q), k), np.float32), np.full((len(q), k), -1, np.int64)
        k = min(k, len(slots))
        if len(slots) <= EXACT_FILTER_MAX:
            scores, found = exact_top_k(q, slots, self.index.reconstruct_batch(slots), k, self.metric)
            return scores, self.slot_ids[found]
        chosen = np.zeros(len(self.slot_live), dtype=bool)
        chosen[slots] = True
        bitmap = np.packbits(chosen, bitorder="little")
        sel = faiss.IDSelectorBitmap(len(chosen), faiss.swig_ptr(bitmap))
        fraction = len(slots) / len(self)
        ef = int(min(MAX_FILTER_EF, max(self.spec.hnsw_ef_search, k, self.spec.hnsw_ef_search / fraction)))
        params = faiss.SearchParametersHNSW(efSearch=ef, sel=sel)
        scores, found = self.index.search(q, k, params=params)
        return scores, np.where(found >= 0, self.slot_ids[found], -1)

    def _add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if any(int(i) in self._slot_of for i in ids):
            raise ValueError("id already live in partition; remove it first")
        start = len(self.slot_ids)
        self.index.add(vecs)
        self.slot_ids = np.concatenate([self.slot_ids, ids])
        self.slot_live = np.concatenate([self.slot_live, np.ones(len(ids), dtype=bool)])
        self._slot_of.update(zip(ids.tolist(), range(start, start + len(ids)), strict=True))
        self._bitmap = None

    def _remove(self, ids: np.ndarray) -> None:
        slots = [self._slot_of.pop(int(i)) for i in ids if int(i) in self._slot_of]
        if slots:
            self.slot_live[slots] = False
            self._bitmap = None

    def _needs_rebuild(self) -> bool:
        dead = len(self.slot_live) - len(self._slot_of)
        return dead > max(_DEAD_COMPACT_MIN, _DEAD_COMPACT_FRACTION * len(self.slot_live))

    def _adopt(self, fresh: FaissPartition) -> None:
        assert isinstance(fresh, HnswPartition)
        self.index, self.slot_ids, self.slot_live = fresh.index, fresh.slot_ids, fresh.slot_live
        self._slot_of, self._bitmap = fresh._slot_of, None

    def _snapshot_arrays(self) -> dict[str, np.ndarray]:
        return {"slot_ids": self.slot_ids, "slot_live": self.slot_live}

    def _load_snapshot_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.slot_ids, self.slot_live = arrays["slot_ids"], arrays["slot_live"]
        live = np.flatnonzero(self.slot_live)
        self._slot_of = dict(zip(self.slot_ids[live].tolist(), live.tolist(), strict=True))
        self._bitmap = None
