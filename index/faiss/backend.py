"""Embedded FAISS backend: partitions in memory, snapshots on local disk.

Consistency: each collection has a readers/writer lock. `apply` holds it exclusively while it
changes any of the collection's partitions, and `search` holds it shared across all partitions it
reads, so a query never sees a half-applied batch or an item in two partitions at once.

Durability is not this module's job: the service's database is the source of truth and snapshots
are a start-up accelerator. A snapshot is one file written to a temporary name, fsynced and renamed,
so a crash leaves either the old or the new snapshot, never a torn one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from index.backend import (
    IndexBackend,
    IndexSpec,
    Metric,
    PartitionKey,
    PartitionState,
    PartitionWrite,
    SearchResult,
)
from index.faiss import prefetch
from index.faiss.gpu import Device, GpuReplicator, resolve_device
from index.faiss.kinds import Snapshot, load_snapshot, new_partition
from index.faiss.partition import FaissPartition
from index.rwlock import CollectionLocks

log = logging.getLogger(__name__)


class FaissBackend(IndexBackend):
    def __init__(self, directory: Path | str | None = None, device: Device = "cpu", threads: int | None = None,
                 write_threads: int | None = None):
        """`threads`: OpenMP threads per search (None: FAISS's default). `write_threads`: threads
        for adding a batch (HNSW insertion parallelises well; an ingest profile put it at two
        thirds of a write's time on one thread); None or 0: every core."""
        self.directory = Path(directory) if directory is not None else None
        self.write_threads = write_threads or os.cpu_count() or 1
        self.device = resolve_device(device)
        self._gpu = GpuReplicator() if self.device == "cuda" else None
        self._gpu_replicas: dict[PartitionKey, faiss.Index | bool] = {}
        self.threads = threads
        self._thread_state = threading.local()
        self._apply_threads()
        self._partitions: dict[PartitionKey, FaissPartition] = {}
        self._lock = CollectionLocks()
        self._tags: dict[int, int] = {}
        self._registry_lock = threading.Lock()
        self._rebuilding: set[PartitionKey] = set()
        self._prefetch = prefetch.claim(self.directory) if self.directory is not None else None
        self._snapshot_reads = {"read ahead": 0, "read at start-up": 0}

    def describe(self) -> str:
        return f"faiss on {self.device}, snapshots in {self.directory or 'memory only'}"

    # ---- bookkeeping --------------------------------------------------------------------------
    def _apply_threads(self) -> None:
        """Apply the OpenMP thread count in the calling thread.

        OpenMP's thread count is per thread: a worker thread that never called
        `omp_set_num_threads` uses every core, which for single queries is about twice as slow
        as one thread (measured, bench/serving.py). So every thread that searches or writes sets
        it once.
        """
        if self.threads is not None and not getattr(self._thread_state, "set", False):
            faiss.omp_set_num_threads(self.threads)
            self._thread_state.set = True

    @contextmanager
    def _write_threads(self) -> Iterator[None]:
        """Adds run on `write_threads` OpenMP threads; the calling thread gets its search count back
        after (thread-pool threads serve searches too)."""
        if self.write_threads == self.threads:
            yield
            return
        faiss.omp_set_num_threads(self.write_threads)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(self.threads or os.cpu_count() or 1)

    def _partition(self, key: PartitionKey) -> FaissPartition:
        try:
            return self._partitions[key]
        except KeyError:
            raise KeyError(f"no partition {key}") from None

    def _snapshot_path(self, key: PartitionKey) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / key.collection_name / f"{key.model_name}.npz"

    # ---- lifecycle ----------------------------------------------------------------------------
    def ensure_partition(self, key: PartitionKey, dim: int, metric: Metric, spec: IndexSpec) -> None:
        with self._lock(key.collection).write():
            existing = self._partitions.get(key)
            if existing is not None:
                if (existing.dim, existing.metric, existing.spec) != (dim, metric, spec):
                    raise ValueError(f"partition {key} exists with another configuration")
                return
            self._partitions[key] = new_partition(dim, metric, spec, auto_rebuild=False)

    def drop_partition(self, key: PartitionKey) -> None:
        with self._lock(key.collection).write():
            self._partitions.pop(key, None)
            self._gpu_replicas.pop(key, None)
            path = self._snapshot_path(key)
            if path is not None and path.exists():
                path.unlink()

    def has_partition(self, key: PartitionKey) -> bool:
        return key in self._partitions

    def partitions(self, collection: int | None = None) -> list[PartitionKey]:
        keys = list(self._partitions)
        return [k for k in keys if collection is None or k.collection == collection]

    def count(self, key: PartitionKey) -> int:
        with self._lock(key.collection).read():
            return len(self._partition(key))

    def sizes(self, collection: int) -> dict[int, int]:
        """One reading under the collection's read lock: a partition that a retirement drops
        meanwhile is either counted or absent, never a KeyError on the query path."""
        with self._lock(collection).read():
            return {k.model: len(p) for k, p in list(self._partitions.items()) if k.collection == collection}

    def state(self, key: PartitionKey) -> PartitionState:
        with self._lock(key.collection).read():
            part = self._partition(key)
            vectors, structure = len(part), part.structure
        with self._registry_lock:
            rebuilding = key in self._rebuilding
        return PartitionState(vectors, structure, rebuilding)

    def search_cost(self, key: PartitionKey) -> int:
        part = self._partitions.get(key)
        return part.search_cost() if part is not None else 0

    def live_ids(self, key: PartitionKey) -> np.ndarray:
        with self._lock(key.collection).read():
            return self._partition(key).live_ids()

    # ---- data ---------------------------------------------------------------------------------
    def apply(self, collection: int, writes: Mapping[int, PartitionWrite], tag: int | None = None) -> None:
        keys = {model: PartitionKey(collection, model) for model in writes}
        self._apply_threads()
        with self._lock(collection).write():
            parts = {model: self._partition(key) for model, key in keys.items()}  # fail before mutating
            for model, write in writes.items():
                parts[model].remove(write.remove)
            with self._write_threads():
                for model, write in writes.items():
                    if len(write.add_ids):
                        parts[model].add(write.add_ids, write.add_vectors)
                    self._gpu_replicas.pop(keys[model], None)
            if tag is not None:
                self._tags[collection] = tag
            due = [keys[m] for m, part in parts.items() if part.rebuild_due]
        for key in due:
            self._start_rebuild(key)

    # ---- rebuilds beside the live index --------------------------------------------------------
    def _start_rebuild(self, key: PartitionKey) -> None:
        with self._registry_lock:
            if key in self._rebuilding:
                return
            self._rebuilding.add(key)
        threading.Thread(target=self._rebuild, args=(key,), name=f"rebuild-{key.collection_name}-{key.model_name}",
                         daemon=True).start()

    def _rebuild(self, key: PartitionKey) -> None:
        """IVF training / HNSW compaction without blocking searches or writes (partition.py)."""
        self._apply_threads()
        lock = self._lock(key.collection)
        part = None
        try:
            with lock.read():  # no writer in between: the copy and the start of the log agree
                part = self._partitions.get(key)
                if part is None or not part.rebuild_due:
                    return
                ids, vecs = part.start_rebuild()
            started = time.perf_counter()
            fresh = part.rebuilt(ids, vecs)
            with lock.write():
                if self._partitions.get(key) is part:
                    self._partitions[key] = part.finish_rebuild(fresh)
                    self._gpu_replicas.pop(key, None)
                    log.info("partition %s rebuilt beside the live index in %.1f s (%d vectors)",
                             key, time.perf_counter() - started, len(ids))
                else:  # dropped or restored meanwhile
                    part.abandon_rebuild()
        except Exception:
            log.exception("rebuild of %s failed; the current index keeps serving", key)
            if part is not None:
                part.abandon_rebuild()
        finally:
            with self._registry_lock:
                self._rebuilding.discard(key)

    def wait_for_rebuilds(self, timeout: float = 60.0) -> bool:
        """Block until no rebuild runs (tests, benchmarks, clean shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._registry_lock:
                if not self._rebuilding:
                    return True
            time.sleep(0.01)
        return False

    def tag(self, collection: int) -> int:
        return self._tags.get(collection, 0)

    def search(self, collection: int, queries: Mapping[int, np.ndarray], k: int,
               allowed: np.ndarray | None = None, effort: float = 1.0) -> dict[int, SearchResult]:
        self._apply_threads()
        with self._lock(collection).read():
            out: dict[int, SearchResult] = {}
            for model, q in queries.items():
                key = PartitionKey(collection, model)
                part = self._partitions.get(key)
                if part is None:  # dropped (retired) after the query was planned: it holds nothing now
                    out[model] = SearchResult.empty(len(q), k)
                    continue
                replica = self._gpu_replica(key, part) if self._gpu is not None and allowed is None else None
                out[model] = part.search(q, k, via=replica, allowed=allowed, effort=effort)
            return out

    def _gpu_replica(self, key: PartitionKey, part: FaissPartition) -> faiss.Index | None:
        if not part.gpu_replicable or len(part) == 0:
            return None
        replica = self._gpu_replicas.get(key)
        if replica is None:
            # False remembers "no GPU replica for this index" until the next write drops the entry
            made = self._gpu.replicate(part.index)
            replica = self._gpu_replicas[key] = made if made is not None else False
        return None if replica is False else replica

    # ---- persistence --------------------------------------------------------------------------
    def persist(self, key: PartitionKey) -> None:
        path = self._snapshot_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            with self._lock(key.collection).read():  # writes wait; searches go on
                self._partition(key).write_snapshot(fh, self.tag(key.collection))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def restore(self, key: PartitionKey, dim: int, metric: Metric, spec: IndexSpec) -> int | None:
        path = self._snapshot_path(key)
        if path is None or not path.exists():
            return None
        try:
            snapshot = self._prefetch.take(path) if self._prefetch is not None else None
            self._snapshot_reads["read at start-up" if snapshot is None else "read ahead"] += 1
            if snapshot is None:
                snapshot = self._read_snapshot(path, dim, metric, spec)
            elif not snapshot.matches(dim, metric, spec):
                raise ValueError("snapshot was written for a different partition configuration")
        except Exception as exc:  # corrupt or foreign snapshot: the caller rebuilds from the store
            log.warning("ignoring snapshot %s (%s: %s); the partition is rebuilt from the database",
                        path, type(exc).__name__, exc)
            return None
        part, tag = snapshot.partition, snapshot.tag
        part.auto_rebuild = False
        with self._lock(key.collection).write():
            self._partitions[key] = part
            self._gpu_replicas.pop(key, None)
        if part.check_rebuild():
            self._start_rebuild(key)
        return tag

    @staticmethod
    def _read_snapshot(path: Path, dim: int, metric: Metric, spec: IndexSpec) -> Snapshot:
        with open(path, "rb") as fh:
            return load_snapshot(fh, expect=(dim, metric, spec))

    def startup_done(self) -> None:
        log.info("snapshots: %d read ahead (while the service started), %d read at start-up",
                 self._snapshot_reads["read ahead"], self._snapshot_reads["read at start-up"])
        if self._prefetch is not None:
            self._prefetch.release()
            self._prefetch = None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
