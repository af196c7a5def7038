"""The embedded FAISS backend (the default): partitions in memory, snapshots on local disk.

`backend.py` implements `IndexBackend`; `partition.py` is what every index kind shares and
`flat.py`, `hnsw.py`, `ivf.py` are the kinds (`kinds.py` maps `IndexSpec.kind` to them);
`gpu.py` keeps GPU replicas where faiss-gpu sees a device; `prefetch.py` reads snapshots while
the service starts.

FAISS itself is imported by `build` (and `FaissBackend`), not by this package: `nobackfill serve`
starts the snapshot prefetch before anything heavy is imported, and its thread imports FAISS.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from index.faiss.backend import FaissBackend


def build(directory: Path | None = None, device: str = "cpu", threads: int | None = None,
          write_threads: int | None = None, **options: Any) -> FaissBackend:
    """The backend `index.create_backend("faiss", ...)` returns."""
    from index.faiss.backend import FaissBackend

    if options:
        raise ValueError(f"faiss backend: unknown options {sorted(options)}")
    return FaissBackend(directory, device=device, threads=threads,  # type: ignore[arg-type]
                        write_threads=write_threads)


def __getattr__(name: str) -> Any:
    if name == "FaissBackend":
        from index.faiss.backend import FaissBackend

        return FaissBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FaissBackend", "build"]
