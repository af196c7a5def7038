"""Vector index library: partitions of embeddings per (collection, model version).

Pure library: it never imports `service`. `backend.py` is the `IndexBackend` interface and its
data types (`PartitionKey`, `IndexSpec`, `PartitionWrite`, `SearchResult`); `factory.py` builds
a backend by name; each backend is one sub-package (`faiss/`, the embedded default), found by
its folder: a new backend is a new folder with a `build(**options)` function.
"""

from index.backend import (
    IndexBackend,
    IndexSpec,
    Metric,
    PartitionKey,
    PartitionState,
    PartitionWrite,
    SearchResult,
)
from index.factory import available_backends, create_backend

__all__ = [
    "IndexBackend", "IndexSpec", "Metric", "PartitionKey", "PartitionState", "PartitionWrite", "SearchResult",
    "available_backends", "create_backend",
]
