"""One FAISS index holding one partition's vectors: the behaviour every index kind shares.

A partition supports what the service relies on -- add, remove, re-add the same id with a new
vector, search, list ids, snapshot -- and each index kind (`flat.py`, `hnsw.py`, `ivf.py`) fills
in only what differs. Cosine similarity is inner product on L2-normalised vectors; l2 scores are
negated squared distances, so every metric is higher-is-better.

Rebuilds (IVF training, HNSW compaction) take seconds to minutes on large partitions. Used on its
own a partition rebuilds inline (`auto_rebuild=True`); the backend instead sets `rebuild_due` and
rebuilds *beside* the live index: `start_rebuild` (under the collection's read lock) copies the
live vectors and starts logging every later write, `rebuilt` builds the new index with no lock
held while searches and writes go on against the old one, and `finish_rebuild` (under the write
lock, a short moment) replays the logged writes into the new index and hands it over.
"""

from __future__ import annotations

import json
import zipfile
from abc import ABC, abstractmethod
from typing import BinaryIO, ClassVar

import faiss
import numpy as np

from index.backend import IndexSpec, Metric, SearchResult

INDEX_MEMBER = "index.faiss"  # the snapshot zip member FAISS streams the index into
_EMPTY_IDS = np.empty(0, dtype=np.int64)


def faiss_metric(metric: Metric) -> int:
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def flat_index(dim: int, metric: Metric) -> faiss.Index:
    """The exhaustive index for a metric (inner product for cosine and ip)."""
    return faiss.IndexFlatL2(dim) if metric == "l2" else faiss.IndexFlatIP(dim)


def exact_top_k(q: np.ndarray, ids: np.ndarray, vecs: np.ndarray, k: int, metric: Metric) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    """(raw FAISS-convention scores, ids) of the k best of a small candidate set, exactly: inner
    product for ip / cosine (vectors prepared), squared distance (lower is better) for l2."""
    if metric == "l2":
        raw = (q * q).sum(1)[:, None] - 2 * q @ vecs.T + (vecs * vecs).sum(1)[None, :]
        order = np.argsort(raw, axis=1, kind="stable")[:, :k]
    else:
        raw = q @ vecs.T
        order = np.argsort(-raw, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(raw, order, axis=1).astype(np.float32), ids[order]


def prepare_vectors(vectors: np.ndarray, metric: Metric) -> np.ndarray:
    """Contiguous float32, L2-normalised for cosine (zero vectors stay zero)."""
    out = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric == "cosine" and out.ndim == 2:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.ascontiguousarray(out / np.maximum(norms, 1e-12), dtype=np.float32)
    return out


class FaissPartition(ABC):
    """The partition interface the FAISS backend uses; one subclass per index kind."""

    kind: ClassVar[str]
    gpu_replicable: ClassVar[bool] = True  # FAISS has GPU flat and IVF indexes, no GPU HNSW

    def __init__(self, dim: int, metric: Metric, spec: IndexSpec, auto_rebuild: bool = True) -> None:
        if dim < 1:
            raise ValueError("dim must be >= 1")
        self.dim = dim
        self.metric: Metric = metric
        self.spec = spec
        self.auto_rebuild = auto_rebuild
        self.rebuild_due = False
        self._log: list[tuple[str, np.ndarray, np.ndarray | None]] | None = None
        self.index: faiss.Index = self._new_index()

    # ---- what each kind provides ----------------------------------------------------------------
    @abstractmethod
    def _new_index(self) -> faiss.Index: ...

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def live_ids(self) -> np.ndarray:
        """Sorted ids of the live vectors."""

    @abstractmethod
    def live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the live entries (vectors as stored: normalised for cosine)."""

    @abstractmethod
    def _compared_per_query(self) -> float:
        """How many stored vectors one query is compared with (for `search_cost`)."""

    @abstractmethod
    def _search_labels(self, q: np.ndarray, k: int, via: faiss.Index | None,
                       effort: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(raw FAISS scores, caller ids or -1) for prepared queries; `effort` multiplies the
        spec's search breadth (efSearch, nprobe) for a deeper search than the spec was set for."""

    @abstractmethod
    def _search_allowed(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like `_search_labels`, over the `allowed` ids only (on the CPU index: GPU indexes here
        take no id selector)."""

    @abstractmethod
    def _add(self, ids: np.ndarray, vecs: np.ndarray) -> None: ...

    @abstractmethod
    def _remove(self, ids: np.ndarray) -> None: ...

    def _needs_rebuild(self) -> bool:
        """Whether the structure should be rebuilt now (IVF training, HNSW compaction)."""
        return False

    def _adopt(self, fresh: FaissPartition) -> None:
        """Take over a rebuilt partition's index state (inline rebuilds)."""
        self.index = fresh.index

    def _snapshot_arrays(self) -> dict[str, np.ndarray]:
        """Extra arrays a snapshot must carry. Every snapshot has slot arrays (empty where unused),
        so one reader handles every kind and every earlier snapshot."""
        return {"slot_ids": _EMPTY_IDS, "slot_live": np.empty(0, dtype=bool)}

    def _load_snapshot_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        return None

    # ---- shared behaviour -----------------------------------------------------------------------
    @property
    def structure(self) -> str:
        """The index searched now (the spec's kind; IVF says "exact" until trained)."""
        return self.kind

    def search_cost(self) -> int:
        """Approximate multiply-adds for one query: vectors compared times dimension."""
        return int(self._compared_per_query() * self.dim)

    def search(self, queries: np.ndarray, k: int, via: faiss.Index | None = None,
               allowed: np.ndarray | None = None, effort: float = 1.0) -> SearchResult:
        """Top-k search; `via` runs it on a replica of this index (a GPU copy) instead.

        `allowed` (sorted ids): only those may be returned (a payload pre-filter). Each kind
        searches them so that recall stays that of an unfiltered search (`_search_allowed`).
        `effort` (>= 1) widens an approximate search (IndexBackend.search)."""
        q = prepare_vectors(queries, self.metric)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (n, {self.dim}), got {q.shape}")
        if len(self) == 0 or (allowed is not None and len(allowed) == 0):
            return SearchResult(np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64))
        k_eff = min(k, len(self) if allowed is None else min(len(self), len(allowed)))
        if allowed is None:
            scores, ids = self._search_labels(q, k_eff, via, effort)
        else:
            scores, ids = self._search_allowed(q, k_eff, np.ascontiguousarray(allowed, dtype=np.int64))
        if self.metric == "l2":
            scores = -scores
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        if ids.shape[1] < k:  # pad to the requested width so callers can stack results
            scores = np.pad(scores, ((0, 0), (0, k - ids.shape[1])), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, k - ids.shape[1])), constant_values=-1)
        return SearchResult(scores=scores, ids=ids)

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
        self._add(ids, vecs)
        if self._needs_rebuild():
            self._rebuild_needed()

    def remove(self, ids: np.ndarray) -> None:
        """Remove ids (absent ones are ignored)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        if self._log is not None:
            self._log.append(("remove", ids.copy(), None))
        self._remove(ids)
        if self._needs_rebuild():
            self._rebuild_needed()

    # ---- rebuilds (IVF training, HNSW compaction) -----------------------------------------------
    def _rebuild_needed(self) -> None:
        if self.auto_rebuild:
            self.rebuild_now()
        else:
            self.rebuild_due = True

    def check_rebuild(self) -> bool:
        """Set `rebuild_due` if the partition needs one now (e.g. after loading a snapshot)."""
        self.rebuild_due = self._needs_rebuild()
        return self.rebuild_due

    def rebuilt(self, ids: np.ndarray, vecs: np.ndarray) -> FaissPartition:
        """A new partition of the same kind holding (ids, vecs), its structure built afresh."""
        fresh = type(self)(self.dim, self.metric, self.spec, auto_rebuild=self.auto_rebuild)
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
        self._adopt(self.rebuilt(*self.live_vectors()))
        self.rebuild_due = False

    # ---- persistence ----------------------------------------------------------------------------
    def write_snapshot(self, fh: BinaryIO, tag: int) -> None:
        """Write one self-describing snapshot (index, kind-specific arrays, metadata) to an open file.

        A zip (stored, not compressed) whose index member is streamed by FAISS itself: no copy of
        the index is ever held in memory. (Serialising to bytes first cost three copies of the
        index at the peak -- 13 GB for 1M x 768-d HNSW -- and an out-of-memory kill.)
        """
        meta = {"tag": tag, "dim": self.dim, "metric": self.metric, "spec": self.spec.to_dict()}
        arrays = {**self._snapshot_arrays(), "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open(INDEX_MEMBER, "w", force_zip64=True) as member:
                faiss.write_index(self.index, faiss.PyCallbackIOWriter(member.write))
            for name, array in arrays.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.save(member, array, allow_pickle=False)
