"""Inverted lists: exact (flat) until the partition holds `ivf_train_min` vectors, then trained once.

An IVF trained on a handful of points is worse than exhaustive search, so a young partition is a
flat one; once it is large enough the rebuild trains about 4·sqrt(n) lists on the vectors present
(at most n/39: FAISS wants 39 training points per list) and every later vector joins a list.

The lists hold float32 vectors (`ivf_encoding="flat"`), 8-bit scalar codes (`"sq8"`: a byte per
dimension, 4x less memory) or product-quantisation codes (`"pq"`: a byte per `ivf_pq_sub_dim`
dimensions, 16x less by default). Quantised codes are what the partition keeps: its vectors read
back (`live_vectors`) are their reconstructions, and scores are approximate. A PQ partition stays
exact until it has 9,984 vectors, the fewest FAISS trains 256 centroids per sub-quantiser on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import faiss
import numpy as np

from index.backend import PQ_MIN_TRAINING
from index.faiss.flat import FlatPartition
from index.faiss.partition import FaissPartition, faiss_metric, flat_index


class IvfPartition(FlatPartition):
    kind = "ivf"

    @property
    def trained(self) -> bool:
        return isinstance(self.index, faiss.IndexIVF)

    @property
    def structure(self) -> str:
        return "ivf" if self.trained else "exact"

    def _lists(self) -> Iterator[tuple[int, np.ndarray]]:
        """(list number, ids) of every non-empty inverted list, in list order."""
        invlists = self.index.invlists
        for list_no in range(self.index.nlist):
            size = invlists.list_size(list_no)
            if size:
                ptr = invlists.get_ids(list_no)
                ids = faiss.rev_swig_ptr(ptr, size).copy()
                invlists.release_ids(list_no, ptr)
                yield list_no, ids

    def live_ids(self) -> np.ndarray:
        if not self.trained:
            return super().live_ids()
        parts = [ids for _, ids in self._lists()]
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)

    def live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.trained:
            return super().live_vectors()
        ids, vecs = [], []  # list by list: an IVF without a direct map cannot look an id up
        for list_no, list_ids in self._lists():
            block = np.empty((len(list_ids), self.dim), np.float32)
            for offset in range(len(list_ids)):
                self.index.reconstruct_from_offset(list_no, offset, faiss.swig_ptr(block[offset]))
            ids.append(list_ids)
            vecs.append(block)
        if not ids:
            return np.empty(0, dtype=np.int64), np.empty((0, self.dim), np.float32)
        return np.concatenate(ids), np.vstack(vecs)

    def _compared_per_query(self) -> float:
        if not self.trained:
            return len(self)
        return self.index.nlist + len(self) * min(1.0, self.spec.ivf_nprobe / self.index.nlist)

    def _search_labels(self, q: np.ndarray, k: int, via: faiss.Index | None,
                       effort: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        if via is not None or not self.trained:
            return super()._search_labels(q, k, via)
        nprobe = min(self.index.nlist, math.ceil(self.spec.ivf_nprobe * max(1.0, effort)))
        return self.index.search(q, k, params=faiss.SearchParametersIVF(nprobe=nprobe))

    def _search_allowed(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probe more lists the fewer ids are allowed: nprobe lists hold about nprobe/nlist of the
        partition, so with a fraction f allowed, nprobe/f lists hold as many candidates as an
        unfiltered search sees (all lists at f <= nprobe/nlist: then the search is exact)."""
        if not self.trained:
            return super()._search_allowed(q, k, allowed)
        fraction = min(1.0, len(allowed) / max(1, len(self)))
        nprobe = min(self.index.nlist, max(self.spec.ivf_nprobe, math.ceil(self.spec.ivf_nprobe / fraction)))
        params = faiss.SearchParametersIVF(nprobe=nprobe, sel=faiss.IDSelectorBatch(allowed))
        return self.index.search(q, k, params=params)

    def _needs_rebuild(self) -> bool:
        return not self.trained and self.index.ntotal >= self.spec.training_min()

    def rebuilt(self, ids: np.ndarray, vecs: np.ndarray) -> FaissPartition:
        fresh = IvfPartition(self.dim, self.metric, self.spec, auto_rebuild=self.auto_rebuild)
        if len(ids) >= self.spec.training_min():
            fresh.index = self._trained_index(ids, vecs)
        elif len(ids):  # too few to train (deletes since the rebuild was asked for): stay exact
            fresh.add(ids, vecs)
        return fresh

    def _trained_index(self, ids: np.ndarray, vecs: np.ndarray) -> faiss.IndexIVF:
        nlist = self.spec.ivf_nlist or max(1, int(4 * math.sqrt(len(ids))))
        nlist = min(nlist, max(1, len(ids) // 39))  # FAISS wants >= 39 training points per list
        quantizer = flat_index(self.dim, self.metric)
        ivf = self._ivf(quantizer, nlist)
        ivf.own_fields = True
        quantizer.this.disown()
        rng = np.random.default_rng(0)
        limit = max(256 * nlist, PQ_MIN_TRAINING)
        sample = vecs if len(vecs) <= limit else vecs[rng.choice(len(vecs), limit, replace=False)]
        ivf.train(np.ascontiguousarray(sample))
        ivf.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
        return ivf

    def _ivf(self, quantizer: faiss.Index, nlist: int) -> faiss.IndexIVF:
        """The untrained IVF index whose lists hold the spec's encoding."""
        metric = faiss_metric(self.metric)
        if self.spec.ivf_encoding == "sq8":
            return faiss.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_8bit, metric)
        if self.spec.ivf_encoding == "pq":
            return faiss.IndexIVFPQ(quantizer, self.dim, nlist, self.spec.pq_subquantisers(self.dim), 8, metric)
        return faiss.IndexIVFFlat(quantizer, self.dim, nlist, metric)
