"""Exact search: `IndexIDMap2(IndexFlat*)` under the caller's ids; removes ids directly."""

from __future__ import annotations

import faiss
import numpy as np

from index.faiss.partition import FaissPartition, flat_index


class FlatPartition(FaissPartition):
    kind = "flat"

    def _new_index(self) -> faiss.Index:
        return faiss.IndexIDMap2(flat_index(self.dim, self.metric))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def live_ids(self) -> np.ndarray:
        return np.sort(faiss.vector_to_array(self.index.id_map).astype(np.int64))

    def live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        return ids, self.index.index.reconstruct_n(0, self.index.ntotal)

    def _compared_per_query(self) -> float:
        return len(self)

    def _search_labels(self, q: np.ndarray, k: int, via: faiss.Index | None,
                       effort: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        return (via if via is not None else self.index).search(q, k)  # exact: effort changes nothing

    def _search_allowed(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact by construction: the scan skips every id the selector does not hold."""
        sel = faiss.IDSelectorBatch(allowed)
        return self.index.search(q, k, params=faiss.SearchParameters(sel=sel))

    def _add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        self.index.add_with_ids(vecs, ids)

    def _remove(self, ids: np.ndarray) -> None:
        self.index.remove_ids(faiss.IDSelectorBatch(ids))
