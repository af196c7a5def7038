"""The partition class for each index kind of `IndexSpec.kind`: a new kind is one module + one line."""

from __future__ import annotations

from index.backend import IndexSpec, Metric
from index.faiss.flat import FlatPartition
from index.faiss.hnsw import HnswPartition
from index.faiss.ivf import IvfPartition
from index.faiss.partition import FaissPartition

PARTITION_KINDS: dict[str, type[FaissPartition]] = {
    cls.kind: cls for cls in (FlatPartition, HnswPartition, IvfPartition)
}


def new_partition(dim: int, metric: Metric, spec: IndexSpec, auto_rebuild: bool = True) -> FaissPartition:
    """An empty partition of the kind `spec` asks for."""
    try:
        cls = PARTITION_KINDS[spec.kind]
    except KeyError:
        raise ValueError(f"unknown index kind {spec.kind!r}; choose from {', '.join(PARTITION_KINDS)}") from None
    return cls(dim, metric, spec, auto_rebuild=auto_rebuild)
