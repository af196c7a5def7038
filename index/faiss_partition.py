"""One FAISS index holding one partition's vectors, whatever the index kind.

Each kind needs different handling of the operations the service relies on (add, remove, re-add
the same id with a new vector, search, list ids):
- flat: `IndexIDMap2(IndexFlat*)`, exact; removes ids directly.
- hnsw: a bare `IndexHNSWFlat` whose labels are *slots*; `slot_ids` maps slots to caller ids. HNSW
  graphs cannot delete, so a removed vector's slot is marked dead and filtered out at search time
  with an `IDSelectorBitmap`; the same id can be re-added in a fresh slot at once. The graph is
  rebuilt without dead slots once they exceed a fifth of it.
- ivf: exact flat until the partition has `ivf_train_min` vectors (an IVF trained on a handful of
  points is worse than exhaustive search), then trained once on the vectors present.
Cosine similarity is inner product on L2-normalised vectors; l2 scores are negated squared
distances, so every metric is higher-is-better.

Rebuilds (IVF training, HNSW compaction) take seconds to minutes on large partitions. Used on its
own a partition rebuilds inline (`auto_rebuild=True`); the backend instead sets `rebuild_due` and
rebuilds *beside* the live index: `start_rebuild` (under the collection's read lock) copies the
live vectors and starts logging every later write, `rebuilt` builds the new index with no lock
held while searches and writes go on against the old one, and `finish_rebuild` (under the write
lock, a short moment) replays the logged writes into the new index and hands it over.
"""

from __future__ import annotations

import json
import math
import zipfile
from typing import BinaryIO

import faiss
import numpy as np

from index.backend import IndexSpec, Metric, SearchResult

_DEAD_COMPACT_FRACTION = 0.2
_DEAD_COMPACT_MIN = 1_000
_INDEX_MEMBER = "index.faiss"  # the snapshot zip member FAISS streams the index into


def _faiss_metric(metric: Metric) -> int:
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def prepare_vectors(vectors: np.ndarray, metric: Metric) -> np.ndarray:
    """Contiguous float32, L2-normalised for cosine (zero vectors stay zero)."""
    out = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric == "cosine" and out.ndim == 2:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)
    return out


class FaissPartition:
    def __init__(self, dim: int, metric: Metric, spec: IndexSpec, auto_rebuild: bool = True) -> None:
        if dim < 1:
            raise ValueError("dim must be >= 1")
        self.dim = dim
        self.metric: Metric = metric
        self.spec = spec
        self.auto_rebuild = auto_rebuild
        self.rebuild_due = False
        self._log: list[tuple[str, np.ndarray, np.ndarray | None]] | None = None
        # HNSW bookkeeping (unused by the other kinds)
        self.slot_ids = np.empty(0, dtype=np.int64)
        self.slot_live = np.empty(0, dtype=bool)
        self._slot_of: dict[int, int] = {}
        self._bitmap: np.ndarray | None = None
        self.index: faiss.Index = self._new_index()

    @property
    def is_hnsw(self) -> bool:
        return self.spec.kind == "hnsw"

    @property
    def is_trained_ivf(self) -> bool:
        return isinstance(self.index, faiss.IndexIVF)

    def _new_index(self) -> faiss.Index:
        if self.is_hnsw:
            index = faiss.IndexHNSWFlat(self.dim, self.spec.hnsw_m, _faiss_metric(self.metric))
            index.hnsw.efConstruction = self.spec.hnsw_ef_construction
            index.hnsw.efSearch = self.spec.hnsw_ef_search
            return index
        return faiss.IndexIDMap2(faiss.IndexFlatL2(self.dim) if self.metric == "l2" else faiss.IndexFlatIP(self.dim))

    # ---- reading ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slot_of) if self.is_hnsw else int(self.index.ntotal)

    def live_ids(self) -> np.ndarray:
        """Sorted ids of the live vectors."""
        if self.is_hnsw:
            return np.sort(self.slot_ids[self.slot_live])
        if self.is_trained_ivf:
            invlists = self.index.invlists
            parts = []
            for list_no in range(self.index.nlist):
                size = invlists.list_size(list_no)
                if size:
                    ptr = invlists.get_ids(list_no)
                    parts.append(faiss.rev_swig_ptr(ptr, size).copy())
                    invlists.release_ids(list_no, ptr)
            return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
        return np.sort(faiss.vector_to_array(self.index.id_map).astype(np.int64))

    @property
    def structure(self) -> str:
        """The index searched now: the spec's kind, or "exact" for an IVF not trained yet."""
        if self.spec.kind == "ivf" and not self.is_trained_ivf:
            return "exact"
        return self.spec.kind

    def search_cost(self) -> int:
        """Approximate multiply-adds for one query: vectors compared times dimension."""
        n = len(self)
        if self.is_hnsw:
            compared = min(n, self.spec.hnsw_ef_search * self.spec.hnsw_m * 2)
        elif self.is_trained_ivf:
            compared = self.index.nlist + n * min(1.0, self.spec.ivf_nprobe / self.index.nlist)
        else:
            compared = n
        return int(compared * self.dim)

    def search(self, queries: np.ndarray, k: int, via: faiss.Index | None = None) -> SearchResult:
        """Top-k search; `via` runs it on a replica of this index (a GPU copy) instead."""
        q = prepare_vectors(queries, self.metric)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (n, {self.dim}), got {q.shape}")
        if len(self) == 0:
            return SearchResult(np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64))
        k_eff = min(k, len(self))
        index = via if via is not None else self.index
        params = None if via is not None else self._search_params()
        scores, labels = index.search(q, k_eff, params=params) if params else index.search(q, k_eff)
        ids = np.where(labels >= 0, self.slot_ids[labels], -1) if self.is_hnsw else labels
        if self.metric == "l2":
            scores = -scores
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        if k_eff < k:  # pad to the requested width so callers can stack results
            scores = np.pad(scores, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, k - k_eff)), constant_values=-1)
        return SearchResult(scores=scores, ids=ids)

    def _search_params(self) -> faiss.SearchParameters | None:
        if self.is_hnsw:
            params = faiss.SearchParametersHNSW(efSearch=self.spec.hnsw_ef_search)
            if len(self._slot_of) < len(self.slot_live):  # some slots are dead
                if self._bitmap is None:
                    self._bitmap = np.packbits(self.slot_live, bitorder="little")
                sel = faiss.IDSelectorBitmap(len(self.slot_live), faiss.swig_ptr(self._bitmap))
                params.sel = sel
                params._keep = (sel, self._bitmap)  # keep both alive while FAISS uses them
            return params
        if self.is_trained_ivf:
            return faiss.SearchParametersIVF(nprobe=self.spec.ivf_nprobe)
        return None

    # ---- writing ------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under ids that are not live in this partition."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        vecs = prepare_vectors(vectors, self.metric)
        if self._log is not None:
            self._log.append(("add", ids.copy(), vecs.copy()))
        if vecs.shape != (len(ids), self.dim):
            raise ValueError(f"vectors must have shape ({len(ids)}, {self.dim}), got {vecs.shape}")
        if self.is_hnsw:
            if any(int(i) in self._slot_of for i in ids):
                raise ValueError("id already live in partition; remove it first")
            start = len(self.slot_ids)
            self.index.add(vecs)
            self.slot_ids = np.concatenate([self.slot_ids, ids])
            self.slot_live = np.concatenate([self.slot_live, np.ones(len(ids), dtype=bool)])
            self._slot_of.update(zip(ids.tolist(), range(start, start + len(ids)), strict=True))
            self._bitmap = None
            return
        self.index.add_with_ids(vecs, ids)
        if self.spec.kind == "ivf" and not self.is_trained_ivf and self.index.ntotal >= self.spec.ivf_train_min:
            self._rebuild_needed()

    def remove(self, ids: np.ndarray) -> None:
        """Remove ids (absent ones are ignored)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        if self._log is not None:
            self._log.append(("remove", ids.copy(), None))
        if not self.is_hnsw:
            self.index.remove_ids(faiss.IDSelectorBatch(ids))
            return
        slots = [self._slot_of.pop(int(i)) for i in ids if int(i) in self._slot_of]
        if slots:
            self.slot_live[slots] = False
            self._bitmap = None
        dead = len(self.slot_live) - len(self._slot_of)
        if dead > max(_DEAD_COMPACT_MIN, _DEAD_COMPACT_FRACTION * len(self.slot_live)):
            self._rebuild_needed()

    # ---- rebuilds (IVF training, HNSW compaction) ---------------------------------------------
    def _rebuild_needed(self) -> None:
        if self.auto_rebuild:
            self.rebuild_now()
        else:
            self.rebuild_due = True

    def check_rebuild(self) -> bool:
        """Set `rebuild_due` if the partition needs one now (e.g. after loading a snapshot)."""
        if self.spec.kind == "ivf" and not self.is_trained_ivf and self.index.ntotal >= self.spec.ivf_train_min:
            self.rebuild_due = True
        elif self.is_hnsw:
            dead = len(self.slot_live) - len(self._slot_of)
            self.rebuild_due = dead > max(_DEAD_COMPACT_MIN, _DEAD_COMPACT_FRACTION * len(self.slot_live))
        return self.rebuild_due

    def live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the live entries (vectors as stored: normalised for cosine)."""
        if self.is_hnsw:
            live = np.flatnonzero(self.slot_live)
            if not len(live):
                return np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
            return self.slot_ids[live].copy(), self.index.reconstruct_n(0, self.index.ntotal)[live]
        if self.is_trained_ivf:
            ids = self.live_ids()
            return ids, np.vstack([self.index.reconstruct(int(i)) for i in ids]) if len(ids) else \
                np.empty((0, self.dim), np.float32)
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        return ids, self.index.index.reconstruct_n(0, self.index.ntotal)

    def rebuilt(self, ids: np.ndarray, vecs: np.ndarray) -> FaissPartition:
        """A new partition holding (ids, vecs): IVF trained on them, or a fresh HNSW graph."""
        fresh = FaissPartition(self.dim, self.metric, self.spec, auto_rebuild=self.auto_rebuild)
        if self.spec.kind == "ivf" and len(ids):
            fresh._train_ivf(ids, vecs)
        else:
            fresh.add(ids, vecs)
        return fresh

    def start_rebuild(self) -> tuple[np.ndarray, np.ndarray]:
        """Copy the live vectors and log every later write (caller excludes writers meanwhile)."""
        self._log = []
        return self.live_vectors()

    def finish_rebuild(self, fresh: FaissPartition) -> FaissPartition:
        """Replay the writes made since `start_rebuild` into `fresh` and return it (caller swaps it in
        while excluding readers and writers)."""
        log, self._log = self._log or [], None
        for op, ids, vecs in log:
            if op == "add":
                fresh.add(ids, vecs)
            else:
                fresh.remove(ids)
        self.rebuild_due = False
        return fresh

    def abandon_rebuild(self) -> None:
        self._log = None

    def rebuild_now(self) -> None:
        """Rebuild inline (a partition used on its own): adopt the rebuilt index's state."""
        fresh = self.rebuilt(*self.live_vectors())
        self.index, self.slot_ids, self.slot_live = fresh.index, fresh.slot_ids, fresh.slot_live
        self._slot_of, self._bitmap, self.rebuild_due = fresh._slot_of, None, False

    def _train_ivf(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        nlist = self.spec.ivf_nlist or max(1, int(4 * math.sqrt(len(ids))))
        nlist = min(nlist, max(1, len(ids) // 39))  # FAISS wants >= 39 training points per list
        quantizer = faiss.IndexFlatL2(self.dim) if self.metric == "l2" else faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, _faiss_metric(self.metric))
        ivf.own_fields = True
        quantizer.this.disown()
        rng = np.random.default_rng(0)
        sample = vecs if len(vecs) <= 256 * nlist else vecs[rng.choice(len(vecs), 256 * nlist, replace=False)]
        ivf.train(np.ascontiguousarray(sample))
        ivf.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
        self.index = ivf

    # ---- persistence --------------------------------------------------------------------------
    def write_snapshot(self, fh: BinaryIO, tag: int) -> None:
        """Write one self-describing snapshot (index, HNSW slots, metadata) to an open file.

        A zip (stored, not compressed) whose index member is streamed by FAISS itself: no copy of
        the index is ever held in memory. (Serialising to bytes first cost three copies of the
        index at the peak -- 13 GB for 1M x 768-d HNSW -- and an out-of-memory kill.)
        """
        meta = {"tag": tag, "dim": self.dim, "metric": self.metric, "spec": self.spec.to_dict()}
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open(_INDEX_MEMBER, "w", force_zip64=True) as member:
                faiss.write_index(self.index, faiss.PyCallbackIOWriter(member.write))
            for name, array in (("slot_ids", self.slot_ids), ("slot_live", self.slot_live),
                                ("meta", np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))):
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.save(member, array, allow_pickle=False)

    @classmethod
    def read_snapshot(cls, fh: BinaryIO, dim: int, metric: Metric, spec: IndexSpec) -> tuple[FaissPartition, int]:
        """Load a snapshot; raise ValueError if it was written for another dim/metric/spec.

        Also reads the earlier layout (the index serialised into an `index.npy` member)."""
        with zipfile.ZipFile(fh) as archive:
            def array(name: str) -> np.ndarray:
                with archive.open(f"{name}.npy") as member:
                    return np.load(member, allow_pickle=False)

            meta = json.loads(array("meta").tobytes().decode())
            if meta["dim"] != dim or meta["metric"] != metric or IndexSpec.from_dict(meta["spec"]) != spec:
                raise ValueError("snapshot was written for a different partition configuration")
            part = cls(dim, metric, spec)
            if _INDEX_MEMBER in archive.namelist():
                with archive.open(_INDEX_MEMBER) as member:
                    part.index = faiss.read_index(faiss.PyCallbackIOReader(member.read))
            else:
                part.index = faiss.deserialize_index(array("index"))
            part.slot_ids = array("slot_ids").astype(np.int64)
            part.slot_live = array("slot_live").astype(bool)
        live = np.flatnonzero(part.slot_live)
        part._slot_of = dict(zip(part.slot_ids[live].tolist(), live.tolist(), strict=True))
        return part, int(meta["tag"])
