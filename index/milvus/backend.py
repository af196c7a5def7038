"""Milvus backend: each partition is a Milvus collection, reached through `pymilvus.MilvusClient`.

Milvus keeps the vectors (durably, once a write is acknowledged), so unlike the FAISS backend
there are no snapshots and no start-up rebuild: a restarted service reloads each collection and,
when the stored tag equals the database's change counter, scans nothing (`durable = True`).

Consistency (docs/durability.md, "Milvus"):
- every collection is created with the Strong consistency level: a search sees every write
  acknowledged before it started, on every service replica;
- Milvus has no transaction across its collections, so `apply` orders a batch so that a search
  from another process never misses an item mid-move: all additions (upserts, idempotent under
  retries and repair) first, removals second, the tag last. In between such a search can see an
  item in two partitions; the service resolves every hit against the database's record of
  where the item lives, keeps one representation per item and drops the rest;
- inside one process a per-collection readers/writer lock makes a batch atomic for searches,
  exactly as on FAISS.
The query path reads partition sizes on every query; `sizes` answers from a cache that a
background thread refreshes every `refresh_seconds` (a Milvus count(*) per partition costs tens
of milliseconds on Milvus Lite at 100k rows: inline, it made every refresh a slow query). This
process's own writes adjust the cached sizes at once (additions counted as new, so an overwrite
overcounts until the next refresh); other replicas' writes and partitions show within the bound.
`count` itself is exact (asked of Milvus every time; only dashboards and repair call it).

Sealing: rows Milvus has not flushed sit in a growing segment that Milvus Lite searches by brute
force (5,000 x 384 rows: 140 ms a query, 12 ms once flushed, measured here). A background thread
therefore flushes every partition written to in the last `flush_seconds`; 0 leaves sealing to
Milvus (a Milvus cluster seals growing segments by itself). A partition reports `rebuilding`
while it has unflushed writes.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from pymilvus import DataType, MilvusClient

from index.backend import (
    IndexBackend,
    IndexSpec,
    Metric,
    PartitionKey,
    PartitionState,
    PartitionWrite,
    SearchResult,
)
from index.milvus.names import check_prefix, parse_partition_name, partition_name, tags_name
from index.milvus.params import MILVUS_METRIC, index_params, search_params
from index.rwlock import CollectionLocks

log = logging.getLogger(__name__)

ID_FIELD, VECTOR_FIELD, TAG_FIELD = "id", "vector", "tag"
CONFIG_PROPERTY = "nobackfill.partition"
CONFIG_FORMAT = 1
MAX_TOP_K = 16_384  # Milvus' limit on `limit`
MAX_FILTER_IDS = 16_384  # an `id in [...]` pre-filter longer than this is post-filtered by the caller instead
QUERY_CHUNK = 1_024  # query vectors per search call
DELETE_CHUNK = 10_000  # ids per delete expression
WRITE_CHUNK_BYTES = 8 * 1024 * 1024  # far below Milvus' 64 MB gRPC message limit
ITERATOR_BATCH = 16_384
REMOTE_SEARCH_COST = 1 << 40  # a network round trip: never worth running on the event loop
# pymilvus pings every 10 s even on an idle channel; Milvus Lite's gRPC server (Python grpc's
# defaults: a ping without data at most every 5 min) answers GOAWAY too_many_pings and the
# channel then refuses calls ("Too many pings": seen here after ~100 s idle). Ping only during calls.
GRPC_OPTIONS = {"grpc.keepalive_permit_without_calls": 0, "grpc.keepalive_time_ms": 60_000}


@dataclass(frozen=True)
class PartitionConfig:
    """What a partition was created with, kept as a property of its Milvus collection (set in the
    same call that creates it) so that every replica and a restarted service read the same one."""

    dim: int
    metric: Metric
    spec: IndexSpec

    def to_text(self) -> str:
        return json.dumps({"format": CONFIG_FORMAT, "dim": self.dim, "metric": self.metric,
                           "spec": self.spec.to_dict()}, sort_keys=True)

    @classmethod
    def from_text(cls, text: str) -> PartitionConfig | None:
        try:
            data = json.loads(text)
            if data.get("format") != CONFIG_FORMAT:
                return None
            return cls(int(data["dim"]), data["metric"], IndexSpec.from_dict(data["spec"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


class _TimedClient:
    """The MilvusClient with a deadline on every call. pymilvus retries an unavailable server up
    to 75 times with back-off (minutes) unless a call passes `timeout`, and the client-level
    timeout does not reach the calls: a writer holding its collection's cross-process lock would
    then stall every replica's writes and start-ups for as long as Milvus is down."""

    _UNTIMED = frozenset({"prepare_index_params", "close"})

    def __init__(self, client: MilvusClient, timeout: float) -> None:
        self._client = client
        self._timeout = timeout

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if name in self._UNTIMED or not callable(attr):
            return attr
        return functools.partial(attr, timeout=self._timeout)


def redacted(uri: str) -> str:
    """The URI without credentials, for logs."""
    parts = urlsplit(uri)
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return uri


class MilvusBackend(IndexBackend):
    durable = True

    def __init__(self, uri: str, token: str | None = None, prefix: str = "nobackfill_",
                 refresh_seconds: float = 1.0, flush_seconds: float = 2.0, timeout: float = 10.0) -> None:
        self.uri = uri
        self.prefix = check_prefix(prefix)
        self.refresh_seconds = refresh_seconds
        self.flush_seconds = flush_seconds
        # A dedicated channel with our keepalive options (GRPC_OPTIONS), not pymilvus' shared one.
        # `timeout` bounds each call: a writer holds its collection's cross-process lock while it
        # waits, so a Milvus outage must fail writes (503, journalled) rather than stall every replica.
        self._client = _TimedClient(MilvusClient(uri=uri, token=token or "", timeout=timeout, dedicated=True,
                                                 grpc_options=GRPC_OPTIONS), timeout)
        self._configs: dict[PartitionKey, PartitionConfig] = {}
        self._listed: tuple[frozenset[PartitionKey], float] | None = None
        self._lock = CollectionLocks()
        self._registry_lock = threading.Lock()
        self._unflushed: set[PartitionKey] = set()
        self._sizes: dict[int, tuple[dict[int, int], float]] = {}  # collection -> (model -> vectors, read at)
        self._stop = threading.Event()
        self._ensure_tags_collection()
        self._maintainer: threading.Thread | None = None
        intervals = [t for t in (flush_seconds, refresh_seconds) if t > 0]
        if intervals:
            self._tick = min(intervals)
            self._maintainer = threading.Thread(target=self._maintain, name="nobackfill-milvus", daemon=True)
            self._maintainer.start()

    def describe(self) -> str:
        return f"milvus at {redacted(self.uri)} (collections {self.prefix}*)"

    def close(self) -> None:
        self._stop.set()
        if self._maintainer is not None:
            self._maintainer.join(timeout=30)
        self._client.close()

    def _maintain(self) -> None:
        """Background: flush written partitions every `flush_seconds`, refresh cached sizes every
        `refresh_seconds` (each only when positive)."""
        last_flush = time.monotonic()
        while not self._stop.wait(self._tick):
            try:
                if self.flush_seconds > 0 and time.monotonic() - last_flush >= self.flush_seconds:
                    last_flush = time.monotonic()
                    self.flush()
                if self.refresh_seconds > 0:
                    for collection, (_, read_at) in list(self._sizes.items()):
                        if time.monotonic() - read_at >= self.refresh_seconds:
                            self._read_sizes(collection)
            except Exception:
                log.exception("Milvus maintenance (flush, size refresh) failed; will retry")

    def flush(self) -> None:
        """Seal every partition written to since the last flush (searches of sealed rows use the index)."""
        with self._registry_lock:
            due, self._unflushed = self._unflushed, set()
        for key in sorted(due, key=lambda k: (k.collection, k.model)):
            try:
                # under the collection's write lock: queries that raced a flush on Milvus Lite came
                # back with no hits (tests/test_concurrency.py, about one run in four), so searches
                # and count(*) hold the read lock
                with self._lock(key.collection).write():
                    if key in self._configs:
                        self._client.flush(self._name(key))
            except Exception:
                with self._registry_lock:
                    self._unflushed.add(key)
                raise

    # ---- bookkeeping --------------------------------------------------------------------------
    def _name(self, key: PartitionKey) -> str:
        return partition_name(self.prefix, key)

    def _ensure_tags_collection(self) -> None:
        name = tags_name(self.prefix)
        if not self._client.has_collection(name):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                                description="nobackfill: tag (change counter) per collection")
            schema.add_field(ID_FIELD, DataType.INT64, is_primary=True)
            schema.add_field(TAG_FIELD, DataType.INT64)
            schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=2)  # Milvus requires a vector field
            index = self._client.prepare_index_params()
            index.add_index(field_name=VECTOR_FIELD, index_type="FLAT", metric_type="L2")
            self._create(name, schema, index)
        self._client.load_collection(name)

    def _create(self, name: str, schema, index, properties: dict[str, str] | None = None) -> None:
        try:
            self._client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong",
                                           properties=properties or {})
        except Exception:
            if not self._client.has_collection(name):  # not a race with another replica: a real failure
                raise

    def _config(self, key: PartitionKey) -> PartitionConfig | None:
        """The partition's configuration (this process's copy, else read from Milvus and loaded)."""
        config = self._configs.get(key)
        if config is not None:
            return config
        name = self._name(key)
        if not self._client.has_collection(name):
            return None
        described = self._client.describe_collection(name)
        config = PartitionConfig.from_text((described.get("properties") or {}).get(CONFIG_PROPERTY, ""))
        if config is None:
            raise ValueError(f"Milvus collection {name} exists but was not made by nobackfill (no configuration)")
        self._client.load_collection(name)
        self._configs[key] = config
        return config

    def _require(self, key: PartitionKey) -> PartitionConfig:
        config = self._config(key)
        if config is None:
            raise KeyError(f"no partition {key}")
        return config

    def _forget(self, key: PartitionKey) -> None:
        with self._registry_lock:
            self._unflushed.discard(key)
        cached = self._sizes.get(key.collection)
        if cached is not None and key.model in cached[0]:
            self._sizes[key.collection] = ({m: n for m, n in cached[0].items() if m != key.model}, cached[1])
        self._configs.pop(key, None)
        self._listed = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def check_spec(self, spec: IndexSpec) -> None:
        index_params(spec)  # raises for what Milvus cannot build (ivf_encoding "pq")

    def ensure_partition(self, key: PartitionKey, dim: int, metric: Metric, spec: IndexSpec) -> None:
        wanted = PartitionConfig(dim, metric, spec)
        with self._lock(key.collection).write():
            existing = self._config(key)
            if existing is not None:
                if existing != wanted:
                    raise ValueError(f"partition {key} exists with another configuration")
                return
            index_type, build = index_params(spec)
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field(ID_FIELD, DataType.INT64, is_primary=True)
            schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
            index = self._client.prepare_index_params()
            # Nested under "params": pymilvus otherwise sends each build parameter as its own key, which
            # Milvus Lite 3.2.2 ignores (nlist / M / efConstruction fell back to its defaults, 128 / 16
            # / 200); the nested form is the one every Milvus reads (describe_index shows it back).
            index.add_index(field_name=VECTOR_FIELD, index_type=index_type, metric_type=MILVUS_METRIC[metric],
                            params={"params": build})
            self._create(self._name(key), schema, index, {CONFIG_PROPERTY: wanted.to_text()})
            self._forget(key)
            self._adjust_sizes(key.collection, {key.model: 0})
            if self._config(key) != wanted:  # another replica created it first, differently
                raise ValueError(f"partition {key} exists with another configuration")

    def drop_partition(self, key: PartitionKey) -> None:
        with self._lock(key.collection).write():
            name = self._name(key)
            if self._client.has_collection(name):
                self._client.drop_collection(name)
            self._forget(key)

    def has_partition(self, key: PartitionKey) -> bool:
        return key in self._configs or self._client.has_collection(self._name(key))

    def partitions(self, collection: int | None = None) -> list[PartitionKey]:
        listed = self._listed
        if listed is None or time.monotonic() - listed[1] > self.refresh_seconds:
            names = self._client.list_collections()
            keys = frozenset(k for k in (parse_partition_name(self.prefix, n) for n in names) if k is not None)
            listed = self._listed = (keys, time.monotonic())
        return sorted((k for k in listed[0] if collection is None or k.collection == collection),
                      key=lambda k: (k.collection, k.model))

    def count(self, key: PartitionKey) -> int:
        self._require(key)
        with self._lock(key.collection).read():  # not during a flush (see `flush`)
            rows = self._client.query(self._name(key), filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def sizes(self, collection: int) -> dict[int, int]:
        cached = self._sizes.get(collection)
        if cached is None or self.refresh_seconds <= 0:
            return self._read_sizes(collection)
        return dict(cached[0])

    def _read_sizes(self, collection: int) -> dict[int, int]:
        self._listed = None
        sizes = {}
        for key in self.partitions(collection):
            try:
                sizes[key.model] = self.count(key)
            except KeyError:  # dropped meanwhile
                continue
        self._sizes[collection] = (sizes, time.monotonic())
        return dict(sizes)

    def _adjust_sizes(self, collection: int, deltas: dict[int, int]) -> None:
        cached = self._sizes.get(collection)
        if cached is not None:
            sizes = dict(cached[0])
            for model, delta in deltas.items():
                sizes[model] = max(0, sizes.get(model, 0) + delta)
            self._sizes[collection] = (sizes, cached[1])

    def state(self, key: PartitionKey) -> PartitionState:
        config = self._require(key)
        index = self._client.describe_index(self._name(key), VECTOR_FIELD)
        with self._registry_lock:
            unflushed = key in self._unflushed
        pending = int(index.get("pending_index_rows", 0) or 0) > 0
        return PartitionState(self.count(key), config.spec.kind, unflushed or pending)

    def search_cost(self, key: PartitionKey) -> int:
        return REMOTE_SEARCH_COST

    def live_ids(self, key: PartitionKey) -> np.ndarray:
        self._require(key)
        chunks = list(self._iter_ids(self._name(key)))
        return np.unique(np.concatenate(chunks)) if chunks else np.empty(0, dtype=np.int64)

    def _iter_ids(self, name: str) -> Iterator[np.ndarray]:
        iterator = self._client.query_iterator(name, batch_size=ITERATOR_BATCH, filter="", output_fields=[ID_FIELD])
        try:
            while batch := iterator.next():
                yield np.fromiter((row[ID_FIELD] for row in batch), dtype=np.int64, count=len(batch))
        finally:
            iterator.close()

    # ---- data ---------------------------------------------------------------------------------
    def apply(self, collection: int, writes: Mapping[int, PartitionWrite], tag: int | None = None) -> None:
        keys = {model: PartitionKey(collection, model) for model in writes}
        with self._lock(collection).write():
            configs = {model: self._require(key) for model, key in keys.items()}  # fail before mutating
            batches = {model: _checked_write(write, configs[model].dim) for model, write in writes.items()}
            for model, (add_ids, vectors, _) in batches.items():  # additions first: no item goes missing
                self._upsert(self._name(keys[model]), add_ids, vectors)
            for model, (_, _, gone) in batches.items():
                for start in range(0, len(gone), DELETE_CHUNK):
                    self._client.delete(self._name(keys[model]), ids=gone[start : start + DELETE_CHUNK].tolist())
            self._adjust_sizes(collection, {model: len(add) - len(gone) for model, (add, _, gone) in batches.items()})
            if self.flush_seconds > 0 and keys:
                with self._registry_lock:
                    self._unflushed.update(keys.values())
            if tag is not None:
                self._client.upsert(tags_name(self.prefix), [{ID_FIELD: collection, TAG_FIELD: int(tag),
                                                              VECTOR_FIELD: [0.0, 0.0]}])

    def _upsert(self, name: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not len(ids):
            return
        per_call = max(1, WRITE_CHUNK_BYTES // (vectors.shape[1] * 4 + 16))
        for start in range(0, len(ids), per_call):
            stop = start + per_call
            rows = [{ID_FIELD: int(i), VECTOR_FIELD: v} for i, v in zip(ids[start:stop], vectors[start:stop],
                                                                          strict=True)]
            self._client.upsert(name, rows)

    def tag(self, collection: int) -> int:
        rows = self._client.query(tags_name(self.prefix), ids=[collection], output_fields=[TAG_FIELD])
        return int(rows[0][TAG_FIELD]) if rows else 0

    max_allowed_ids = MAX_FILTER_IDS
    max_k = MAX_TOP_K

    def search(self, collection: int, queries: Mapping[int, np.ndarray], k: int,
               allowed: np.ndarray | None = None, effort: float = 1.0) -> dict[int, SearchResult]:
        if not 1 <= k <= MAX_TOP_K:
            raise ValueError(f"k must be between 1 and {MAX_TOP_K} on Milvus, got {k}")
        if allowed is not None and len(allowed) > MAX_FILTER_IDS:
            raise ValueError(f"at most {MAX_FILTER_IDS} allowed ids on Milvus, got {len(allowed)}")
        # Milvus filters inside the search (a bitset over the segment), so ANN recall holds.
        expr = None if allowed is None else f"{ID_FIELD} in [{','.join(map(str, np.asarray(allowed).tolist()))}]"
        sizes = self.sizes(collection) if allowed is not None else {}  # read before the lock: it is not re-entrant
        with self._lock(collection).read():
            out: dict[int, SearchResult] = {}
            for model, q in queries.items():
                key = PartitionKey(collection, model)
                config = self._config(key)
                if config is None:  # dropped (retired) after the query was planned: it holds nothing now
                    out[model] = SearchResult.empty(len(q), k)
                    continue
                q = np.ascontiguousarray(q, dtype=np.float32)
                if q.ndim != 2 or q.shape[1] != config.dim:
                    raise ValueError(f"queries must have shape (n, {config.dim}), got {q.shape}")
                widen = effort
                if allowed is not None and len(allowed):  # 1 / the allowed fraction of this partition
                    widen = max(effort, sizes.get(model, 0) / len(allowed))
                out[model] = (SearchResult.empty(len(q), k) if allowed is not None and not len(allowed)
                              else self._search_one(self._name(key), config, q, k, expr, widen))
            return out

    def _search_one(self, name: str, config: PartitionConfig, q: np.ndarray, k: int,
                    expr: str | None = None, effort: float = 1.0) -> SearchResult:
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        params = search_params(config.spec, config.metric, k, effort)
        sign = -1.0 if config.metric == "l2" else 1.0  # L2 comes back as a squared distance
        for start in range(0, len(q), QUERY_CHUNK):
            rows = self._client.search(name, data=list(q[start : start + QUERY_CHUNK]), limit=k,
                                       search_params=params, output_fields=[ID_FIELD], filter=expr or "")
            for offset, hits in enumerate(rows):
                for j, hit in enumerate(hits[:k]):
                    ids[start + offset, j] = hit["id"]
                    scores[start + offset, j] = sign * hit["distance"]
        return SearchResult(scores=scores, ids=ids)

    # ---- persistence --------------------------------------------------------------------------
    def persist(self, key: PartitionKey) -> None:
        """Nothing to do: Milvus made every acknowledged write durable already."""

    def restore(self, key: PartitionKey, dim: int, metric: Metric, spec: IndexSpec) -> int | None:
        """Reattach to the partition Milvus kept; a partition made with another configuration is
        dropped (the database is the source of truth: the caller refills it from there)."""
        with self._lock(key.collection).write():
            config = self._config(key)  # a foreign collection of that name raises: it is left alone
            if config is None:
                return None
            if config != PartitionConfig(dim, metric, spec):
                log.warning("Milvus collection %s was made with %s, not %s; dropping it to refill from the database",
                            self._name(key), config, PartitionConfig(dim, metric, spec))
                self._client.drop_collection(self._name(key))
                self._forget(key)
                return None
        return self.tag(key.collection)


def _checked_write(write: PartitionWrite, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids to upsert, their vectors, ids to delete): a replaced id is upserted, not deleted."""
    add_ids = np.ascontiguousarray(write.add_ids, dtype=np.int64)
    if len(add_ids):
        vectors = np.ascontiguousarray(write.add_vectors, dtype=np.float32)
        if vectors.shape != (len(add_ids), dim):
            raise ValueError(f"vectors must have shape ({len(add_ids)}, {dim}), got {vectors.shape}")
        if len(np.unique(add_ids)) != len(add_ids):
            raise ValueError("an id is added twice in one write")
    else:
        vectors = np.empty((0, dim), dtype=np.float32)
    remove = np.ascontiguousarray(write.remove, dtype=np.int64)
    return add_ids, vectors, np.setdiff1d(remove, add_ids)
