"""Vector index library: partitions of embeddings per (collection, model version).

Pure library: it never imports `service`. `backend.py` is the `IndexBackend` interface and its
data types (`PartitionKey`, `IndexSpec`, `PartitionWrite`, `SearchResult`); `factory.py` builds
a backend by name; each backend is one sub-package (`faiss/`, the embedded default).
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
from index.factory import BACKENDS, create_backend

__all__ = ["BACKENDS", "IndexBackend", "IndexSpec", "Metric", "PartitionKey", "PartitionState", "PartitionWrite",
           "SearchResult", "create_backend"]
