"""Vector index library: partitions of embeddings per (collection, model version).

Pure library: it never imports `service`. The backend interface lives in `index.backend`;
FAISS (`index.faiss_backend`) is the embedded default.
"""

from index.backend import IndexBackend, IndexSpec, Metric, PartitionKey, PartitionState, SearchResult
from index.faiss_backend import FaissBackend

__all__ = ["FaissBackend", "IndexBackend", "IndexSpec", "Metric", "PartitionKey", "PartitionState", "SearchResult"]
