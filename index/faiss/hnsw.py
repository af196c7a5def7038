"""Graph search: a bare `IndexHNSWFlat` whose labels are *slots*, mapped to caller ids.

HNSW graphs cannot delete, so a removed vector's slot is marked dead and filtered out at search
time with an `IDSelectorBitmap`; the same id can be re-added in a fresh slot at once. The graph is
rebuilt without dead slots once they exceed a fifth of it (and at least 1,000).
"""

from __future__ import annotations

import faiss
import numpy as np

from index.faiss.partition import FaissPartition, faiss_metric

_DEAD_COMPACT_FRACTION = 0.2
_DEAD_COMPACT_MIN = 1_000


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

    def _search_labels(self, q: np.ndarray, k: int, via: faiss.Index | None) -> tuple[np.ndarray, np.ndarray]:
        params = faiss.SearchParametersHNSW(efSearch=self.spec.hnsw_ef_search)
        if len(self._slot_of) < len(self.slot_live):  # some slots are dead
            if self._bitmap is None:
                self._bitmap = np.packbits(self.slot_live, bitorder="little")
            sel = faiss.IDSelectorBitmap(len(self.slot_live), faiss.swig_ptr(self._bitmap))
            params.sel = sel
            params._keep = (sel, self._bitmap)  # keep both alive while FAISS uses them
        scores, slots = self.index.search(q, k, params=params)
        return scores, np.where(slots >= 0, self.slot_ids[slots], -1)

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
