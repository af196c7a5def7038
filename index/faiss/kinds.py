"""The partition class for each index kind of `IndexSpec.kind` (a new kind is one module + one line),
and the two ways to get a partition: empty, or from a snapshot."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

import faiss
import numpy as np

from index.backend import IndexSpec, Metric
from index.faiss.flat import FlatPartition
from index.faiss.hnsw import HnswPartition
from index.faiss.ivf import IvfPartition
from index.faiss.partition import INDEX_MEMBER, FaissPartition

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


@dataclass(frozen=True)
class Snapshot:
    """A partition read from a snapshot (built with the configuration the snapshot names), and its tag."""

    partition: FaissPartition
    tag: int

    def matches(self, dim: int, metric: Metric, spec: IndexSpec) -> bool:
        part = self.partition
        return (part.dim, part.metric, part.spec) == (dim, metric, spec)


def load_snapshot(fh: BinaryIO, expect: tuple[int, Metric, IndexSpec] | None = None) -> Snapshot:
    """Load a snapshot with the configuration it names (`expect`: refuse any other one first).

    FAISS parses the index with the GIL released, so a prefetch thread (prefetch.py) reads it
    while the main thread starts the service. Also reads the earlier layout (the index serialised
    into an `index.npy` member)."""
    with zipfile.ZipFile(fh) as archive:
        def array(name: str) -> np.ndarray:
            with archive.open(f"{name}.npy") as member:
                return np.load(member, allow_pickle=False)

        meta = json.loads(array("meta").tobytes().decode())
        dim, metric, spec = int(meta["dim"]), meta["metric"], IndexSpec.from_dict(meta["spec"])
        if expect is not None and (dim, metric, spec) != expect:
            raise ValueError("snapshot was written for a different partition configuration")
        part = new_partition(dim, metric, spec)
        if INDEX_MEMBER in archive.namelist():
            with archive.open(INDEX_MEMBER) as member:
                part.index = faiss.read_index(faiss.PyCallbackIOReader(member.read))
        else:
            part.index = faiss.deserialize_index(array("index"))
        part._load_snapshot_arrays({"slot_ids": array("slot_ids").astype(np.int64),
                                    "slot_live": array("slot_live").astype(bool)})
    return Snapshot(part, int(meta["tag"]))
