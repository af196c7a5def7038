"""The embedded FAISS backend (the default): partitions in memory, snapshots on local disk.

`backend.py` implements `IndexBackend`; `partition.py` is what every index kind shares and
`flat.py`, `hnsw.py`, `ivf.py` are the kinds (`kinds.py` maps `IndexSpec.kind` to them);
`gpu.py` keeps GPU replicas where faiss-gpu sees a device; `rwlock.py` is the per-collection lock.
"""

from index.faiss.backend import FaissBackend

__all__ = ["FaissBackend"]
