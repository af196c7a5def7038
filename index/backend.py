"""The narrow interface every vector-index backend implements.

The service talks to indexes only through `IndexBackend`, so FAISS (embedded, default) and a
distributed engine (e.g. Milvus) are interchangeable. A backend stores *partitions*: one per
(collection, model version), each holding vectors of one dimension under integer ids chosen by the
caller. Writes to one collection are applied atomically with respect to searches of that
collection, so a search never sees an item half-moved between partitions.

Each collection also carries a *tag*: the caller's change counter (the store's sequence number)
of the last write applied. Snapshots record it, so after a restart the caller knows exactly which
changes a restored partition has not seen yet.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

Metric = Literal["cosine", "ip", "l2"]
IndexKind = Literal["flat", "hnsw", "ivf"]
IvfEncoding = Literal["flat", "sq8", "pq"]
PQ_MIN_TRAINING = 39 * 256  # FAISS trains 256 centroids per PQ sub-quantiser, 39+ points each

_KEY_TEXT = re.compile(r"^c(\d{1,19})/m(\d{1,19})$")


@dataclass(frozen=True)
class PartitionKey:
    """Identifies one partition: a collection and the model version its vectors were made by.

    Both are the caller's integer ids (database row ids), never user text, so names derived from a
    key -- FAISS snapshot paths, Milvus collection names -- are always safe. The text form is
    `c<collection>/m<model>`; `collection_name` and `model_name` are its two halves.
    """

    collection: int
    model: int

    def __post_init__(self) -> None:
        for part in (self.collection, self.model):
            if isinstance(part, bool) or not isinstance(part, int) or not 0 <= part < 2**63:
                raise ValueError(f"partition key parts must be non-negative 64-bit integers, got {part!r}")

    @property
    def collection_name(self) -> str:
        return collection_name(self.collection)

    @property
    def model_name(self) -> str:
        return f"m{self.model}"

    def encode(self) -> str:
        return f"{self.collection_name}/{self.model_name}"

    @classmethod
    def decode(cls, text: str) -> PartitionKey:
        match = _KEY_TEXT.match(text)
        if match is None:
            raise ValueError(f"not a partition key: {text!r} (expected c<collection id>/m<model id>)")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return self.encode()


def collection_name(collection: int) -> str:
    """The text name of a collection's partitions (`c<id>`), as files and engines see it."""
    return f"c{collection}"


@dataclass(frozen=True)
class IndexSpec:
    """How a partition is indexed. `flat` is exact; `hnsw` and `ivf` trade recall for speed, and
    an IVF's `ivf_encoding` trades recall for memory."""

    kind: IndexKind = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 64
    ivf_nlist: int = 0  # 0 = choose from the partition size when training (about 4·sqrt(n))
    ivf_nprobe: int = 16
    ivf_train_min: int = 10_000  # below this many vectors an IVF partition stays exact (flat)
    # How an IVF partition stores vectors in its lists: "flat" (float32, 4·d bytes), "sq8" (one
    # byte per dimension, d bytes) or "pq" (product quantisation, one byte per `ivf_pq_sub_dim`
    # dimensions). The codes are what a trained IVF holds: memory for recall.
    ivf_encoding: IvfEncoding = "flat"
    ivf_pq_sub_dim: int = 4
    # With a quantised encoding: search `ivf_rerank`·k candidates and re-score them exactly on the
    # full vectors the caller keeps (the service's database), recall for a little latency. 0 = off.
    ivf_rerank: int = 0

    def rerank_depth(self, k: int, max_k: int) -> int:
        """How many candidates to fetch for a top-k answer that will be re-scored exactly."""
        if self.kind != "ivf" or self.ivf_encoding == "flat" or self.ivf_rerank <= 1:
            return k
        return max(k, min(k * self.ivf_rerank, max_k))

    def pq_subquantisers(self, dim: int) -> int:
        """PQ's m for a partition of `dim`: dim / ivf_pq_sub_dim, or the largest divisor of dim
        below it (m must divide dim), so one spec serves every model version of a lineage."""
        target = max(1, dim // max(1, self.ivf_pq_sub_dim))
        return next(m for m in range(target, 0, -1) if dim % m == 0)

    def training_min(self) -> int:
        """Vectors an IVF partition needs before it trains (PQ needs 256 centroids' worth)."""
        return max(self.ivf_train_min, PQ_MIN_TRAINING) if self.ivf_encoding == "pq" else self.ivf_train_min

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping | None) -> IndexSpec:
        return cls(**dict(data or {}))


@dataclass
class SearchResult:
    """`scores[i, j]` is higher-is-better for every metric (negated squared distance for l2);
    `ids[i, j]` is -1 where fewer than k vectors matched."""

    scores: np.ndarray
    ids: np.ndarray

    @classmethod
    def empty(cls, n: int, k: int) -> SearchResult:
        """No hits for n queries (e.g. a partition dropped by a retirement while the query was planned)."""
        return cls(np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64))


@dataclass
class PartitionWrite:
    """Changes to one partition: ids to remove, then ids/vectors to add (applied in that order)."""

    remove: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    add_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    add_vectors: np.ndarray | None = None


@dataclass(frozen=True)
class PartitionState:
    """What a partition's index is right now: shown to operators, waited on by benchmarks.

    `structure` is the index actually searched ("flat", "hnsw", "ivf", or "exact" for an IVF
    partition still below `ivf_train_min`); `rebuilding` is true while a new index (IVF training,
    HNSW compaction) is being built beside the live one.
    """

    vectors: int
    structure: str
    rebuilding: bool = False


class IndexBackend(ABC):
    """Partitions of vectors, searched and mutated under per-collection consistency."""

    durable: bool = False
    """True when the engine keeps every applied write across restarts by itself (Milvus): then
    snapshots are pointless, and a partition whose collection tag equals the store's change
    counter needs no start-up scan. False (FAISS): the database is the only durable copy."""

    def describe(self) -> str:
        """One line for the start-up log: which backend, and where or on what it runs."""
        return type(self).__name__

    def close(self) -> None:  # noqa: B027 -- optional hook: most backends hold nothing to release
        """Release connections and threads (shutdown); the default holds none."""

    def startup_done(self) -> None:  # noqa: B027 -- optional hook: most backends read nothing ahead
        """Start-up has restored every partition: release anything held only for it (FAISS drops
        snapshots prefetched for partitions the database no longer has)."""

    def check_spec(self, spec: IndexSpec) -> None:  # noqa: B027 -- optional hook: FAISS builds every spec
        """Raise ValueError when this backend cannot build `spec`, before anything is created."""

    @abstractmethod
    def ensure_partition(self, key: PartitionKey, dim: int, metric: Metric, spec: IndexSpec) -> None:
        """Create the partition if it does not exist (idempotent)."""

    @abstractmethod
    def drop_partition(self, key: PartitionKey) -> None:
        """Forget the partition and its persisted state."""

    @abstractmethod
    def has_partition(self, key: PartitionKey) -> bool: ...

    @abstractmethod
    def partitions(self, collection: int | None = None) -> list[PartitionKey]: ...

    @abstractmethod
    def count(self, key: PartitionKey) -> int:
        """Number of live vectors in the partition."""

    def sizes(self, collection: int) -> dict[int, int]:
        """Live vectors per model id of the collection's partitions, for the query path (merge
        anchors, skipped partitions). A backend may answer from a cache that lags other processes'
        writes by a bound it documents; the default asks `count` for each partition."""
        return {key.model: self.count(key) for key in self.partitions(collection)}

    def state(self, key: PartitionKey) -> PartitionState:
        """The partition's index structure and whether it is being rebuilt (default: unknown)."""
        return PartitionState(self.count(key), "unknown")

    @abstractmethod
    def live_ids(self, key: PartitionKey) -> np.ndarray:
        """Sorted int64 ids of the live vectors (used to reconcile with the store)."""

    @abstractmethod
    def apply(self, collection: int, writes: Mapping[int, PartitionWrite], tag: int | None = None) -> None:
        """Apply writes to several partitions of one collection atomically w.r.t. its searches.

        `writes` maps model id -> changes. Added ids must not be live in the partition already (remove
        them in the same call to replace a vector). `tag`, when given, becomes the collection's tag.
        """

    @abstractmethod
    def tag(self, collection: int) -> int:
        """The tag of the last write applied to the collection (0 if none)."""

    @abstractmethod
    def search(
        self, collection: int, queries: Mapping[int, np.ndarray], k: int, allowed: np.ndarray | None = None,
        effort: float = 1.0,
    ) -> dict[int, SearchResult]:
        """Search several partitions of one collection against one consistent state.

        `queries` maps model id -> (n, dim) float32 queries already in that partition's space.
        `allowed` (sorted ids, at most `max_allowed_ids`): only these ids may be returned, in every
        partition -- a payload pre-filter; the backend keeps recall near an unfiltered search's.
        `effort` (>= 1) multiplies an approximate index's search breadth (HNSW ef, IVF nprobe):
        a post-filtered query that asks for many more hits than the spec was tuned for asks for
        that much more effort too, so the deep hits it filters are as accurate as the top ones.
        """

    max_allowed_ids: int = 1 << 62  # the largest `allowed` set `search` takes (a remote engine's limit)
    max_k: int = 1 << 62  # the largest k `search` takes

    def search_cost(self, key: PartitionKey) -> int:
        """Rough multiply-adds for one query against the partition (a scheduling hint, not a promise).

        The default assumes an exhaustive scan; backends with cheaper structures override it.
        """
        return self.count(key) * 1024

    @abstractmethod
    def persist(self, key: PartitionKey) -> None:
        """Write a durable snapshot of the partition together with its collection's tag."""

    @abstractmethod
    def restore(self, key: PartitionKey, dim: int, metric: Metric, spec: IndexSpec) -> int | None:
        """Load the partition's snapshot; return the tag it was written at, or None if unusable.

        The collection's tag is not changed: the caller repairs the partition and then sets it.
        """

