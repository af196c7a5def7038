"""One FAISS index holding one partition's vectors, whatever the index kind.

Each kind needs different handling of the operations the service relies on:
- flat: `IndexIDMap2(IndexFlat*)`, exact; supports removal directly.
- hnsw: `IndexIDMap2(IndexHNSWFlat)`. HNSW graphs cannot delete, so removed ids are kept in a
  tombstone set, filtered out at search time with an `IDSelector`, and the graph is rebuilt without
  them once they exceed a fifth of the partition.
- ivf: exact flat until the partition has `ivf_train_min` vectors (an IVF trained on a handful of
  points is worse than exhaustive search), then trained once on the vectors present.
Cosine similarity is inner product on L2-normalised vectors; l2 scores are negated distances so
that every metric is higher-is-better.
"""

from __future__ import annotations

import io
import json
import math

import faiss
import numpy as np

from index.backend import IndexSpec, Metric, SearchResult

_TOMBSTONE_COMPACT_FRACTION = 0.2
_TOMBSTONE_COMPACT_MIN = 1_000


def _faiss_metric(metric: Metric) -> int:
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def prepare_vectors(vectors: np.ndarray, metric: Metric) -> np.ndarray:
    """Contiguous float32, L2-normalised for cosine (zero vectors stay zero)."""
    out = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.maximum(norms, 1e-12)
        out = np.ascontiguousarray(out, dtype=np.float32)
    return out


class FaissPartition:
    def __init__(self, dim: int, metric: Metric, spec: IndexSpec) -> None:
        if dim < 1:
            raise ValueError("dim must be >= 1")
        self.dim = dim
        self.metric: Metric = metric
        self.spec = spec
        self.tombstones: set[int] = set()
        self.index: faiss.Index = self._new_exact_or_hnsw()

    # ---- construction -------------------------------------------------------------------------
    def _new_exact_or_hnsw(self) -> faiss.Index:
        if self.spec.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, self.spec.hnsw_m, _faiss_metric(self.metric))
            inner.hnsw.efConstruction = self.spec.hnsw_ef_construction
            inner.hnsw.efSearch = self.spec.hnsw_ef_search
        elif self.metric == "l2":
            inner = faiss.IndexFlatL2(self.dim)
        else:
            inner = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(inner)

    @property
    def is_trained_ivf(self) -> bool:
        return isinstance(self.index, faiss.IndexIVF)

    # ---- reading ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.index.ntotal) - len(self.tombstones)

    def stored_ids(self) -> np.ndarray:
        """Every id physically in the FAISS index, tombstoned ones included."""
        if self.is_trained_ivf:
            invlists = self.index.invlists
            parts = []
            for list_no in range(self.index.nlist):
                size = invlists.list_size(list_no)
                if size:
                    ptr = invlists.get_ids(list_no)
                    parts.append(faiss.rev_swig_ptr(ptr, size).copy())
                    invlists.release_ids(list_no, ptr)
            return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def live_ids(self) -> np.ndarray:
        ids = self.stored_ids()
        if self.tombstones:
            ids = ids[~np.isin(ids, np.fromiter(self.tombstones, dtype=np.int64))]
        return np.sort(ids)

    def search(self, queries: np.ndarray, k: int, via: faiss.Index | None = None) -> SearchResult:
        """Top-k search; `via` runs it on a replica of this index (a GPU copy) instead."""
        q = prepare_vectors(queries, self.metric)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (n, {self.dim}), got {q.shape}")
        k_eff = max(1, min(k, len(self)))
        if len(self) == 0:
            return SearchResult(
                scores=np.full((len(q), k), -np.inf, dtype=np.float32),
                ids=np.full((len(q), k), -1, dtype=np.int64),
            )
        params = None if via is not None else self._search_params()
        index = via if via is not None else self.index
        scores, ids = index.search(q, k_eff, params=params) if params else index.search(q, k_eff)
        if self.metric == "l2":
            scores = -scores
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        if k_eff < k:  # pad to the requested width so callers can stack results
            pad = k - k_eff
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return SearchResult(scores=scores, ids=ids)

    def _search_params(self) -> faiss.SearchParameters | None:
        if self.spec.kind == "hnsw":
            sel = None
            if self.tombstones:
                batch = faiss.IDSelectorBatch(np.fromiter(self.tombstones, dtype=np.int64))
                sel = faiss.IDSelectorNot(batch)
                params = faiss.SearchParametersHNSW(sel=sel, efSearch=self.spec.hnsw_ef_search)
                params._keep = (batch, sel)  # keep the selectors alive while FAISS uses them
                return params
            return faiss.SearchParametersHNSW(efSearch=self.spec.hnsw_ef_search)
        if self.is_trained_ivf:
            return faiss.SearchParametersIVF(nprobe=self.spec.ivf_nprobe)
        return None

    # ---- writing ------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        vecs = prepare_vectors(vectors, self.metric)
        if vecs.shape != (len(ids), self.dim):
            raise ValueError(f"vectors must have shape ({len(ids)}, {self.dim}), got {vecs.shape}")
        if self.tombstones and not self.tombstones.isdisjoint(ids.tolist()):
            self.compact()  # a tombstoned id is being reused: drop the dead copy first
        self.index.add_with_ids(vecs, ids)
        if self.spec.kind == "ivf" and not self.is_trained_ivf and self.index.ntotal >= self.spec.ivf_train_min:
            self._train_ivf()

    def remove(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        if self.spec.kind == "hnsw":
            present = ids[np.isin(ids, self.stored_ids())]
            self.tombstones.update(present.tolist())
            limit = max(_TOMBSTONE_COMPACT_MIN, _TOMBSTONE_COMPACT_FRACTION * self.index.ntotal)
            if len(self.tombstones) > limit:
                self.compact()
            return
        self.index.remove_ids(faiss.IDSelectorBatch(ids))

    def compact(self) -> None:
        """Rebuild the HNSW graph without tombstoned vectors."""
        if not self.tombstones:
            return
        ids, vecs = self._all_vectors()
        keep = ~np.isin(ids, np.fromiter(self.tombstones, dtype=np.int64))
        self.tombstones.clear()
        self.index = self._new_exact_or_hnsw()
        if keep.any():
            self.index.add_with_ids(np.ascontiguousarray(vecs[keep]), ids[keep])

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Ids and vectors of an `IndexIDMap2` (flat or HNSW storage), in storage order."""
        ids = self.stored_ids()
        if not len(ids):
            return ids, np.empty((0, self.dim), dtype=np.float32)
        return ids, self.index.index.reconstruct_n(0, self.index.ntotal)

    def _train_ivf(self) -> None:
        ids, vecs = self._all_vectors()
        nlist = self.spec.ivf_nlist or max(1, int(4 * math.sqrt(len(ids))))
        nlist = min(nlist, max(1, len(ids) // 39))  # FAISS wants >= 39 training points per list
        quantizer = faiss.IndexFlatL2(self.dim) if self.metric == "l2" else faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, _faiss_metric(self.metric))
        ivf.own_fields = True
        quantizer.this.disown()
        rng = np.random.default_rng(0)
        sample = vecs if len(vecs) <= 256 * nlist else vecs[rng.choice(len(vecs), 256 * nlist, replace=False)]
        ivf.train(np.ascontiguousarray(sample))
        ivf.add_with_ids(vecs, ids)
        self.index = ivf

    # ---- persistence --------------------------------------------------------------------------
    def to_bytes(self, tag: int) -> bytes:
        """One self-describing blob: index, tombstones and metadata, written atomically by the caller."""
        meta = {"tag": tag, "dim": self.dim, "metric": self.metric, "spec": self.spec.to_dict()}
        buf = io.BytesIO()
        np.savez(
            buf,
            index=faiss.serialize_index(self.index),
            tombstones=np.fromiter(self.tombstones, dtype=np.int64),
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, dim: int, metric: Metric, spec: IndexSpec) -> tuple[FaissPartition, int]:
        """Load a blob; raise ValueError if it was written for another dim/metric/spec."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode())
            if meta["dim"] != dim or meta["metric"] != metric or IndexSpec.from_dict(meta["spec"]) != spec:
                raise ValueError("snapshot was written for a different partition configuration")
            part = cls(dim, metric, spec)
            part.index = faiss.deserialize_index(data["index"])
            part.tombstones = set(data["tombstones"].tolist())
        return part, int(meta["tag"])
