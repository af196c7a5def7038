"""The embedded FAISS backend (the default): partitions in memory, snapshots on local disk.

`backend.py` implements `IndexBackend`; `partition.py` is what every index kind shares and
`flat.py`, `hnsw.py`, `ivf.py` are the kinds (`kinds.py` maps `IndexSpec.kind` to them);
`gpu.py` keeps GPU replicas where faiss-gpu sees a device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from index.faiss.backend import FaissBackend


def build(directory: Path | None = None, device: str = "cpu", threads: int | None = None,
          write_threads: int | None = None, **options: Any) -> FaissBackend:
    """The backend `index.create_backend("faiss", ...)` returns."""
    if options:
        raise ValueError(f"faiss backend: unknown options {sorted(options)}")
    return FaissBackend(directory, device=device, threads=threads,  # type: ignore[arg-type]
                        write_threads=write_threads)


__all__ = ["FaissBackend", "build"]
