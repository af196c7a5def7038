"""Run-time choice between GPU and CPU FAISS.

faiss-gpu is only importable where CUDA is present; everywhere else (CI included) the same code
runs on faiss-cpu. `resolve_device` turns the configured device into the one actually used.
"""

from __future__ import annotations

import logging
from typing import Literal

import faiss

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]


def gpu_count() -> int:
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # a faiss-gpu build on a machine without a usable driver
        return 0


def resolve_device(requested: Device) -> Literal["cpu", "cuda"]:
    """`auto` picks CUDA when faiss-gpu sees a GPU; an explicit `cuda` without one is an error."""
    available = gpu_count() > 0
    if requested == "cuda" and not available:
        raise RuntimeError("NOBACKFILL_DEVICE=cuda but FAISS sees no GPU (is faiss-gpu installed?)")
    if requested == "cpu":
        return "cpu"
    return "cuda" if available else "cpu"


class GpuReplicator:
    """Keeps read-only GPU copies of CPU indexes for searching (flat and IVF only).

    The CPU index stays the master copy because GPU indexes cannot remove ids; a replica is
    dropped on every write and rebuilt on the next search, so the GPU is used for read-heavy
    partitions and writes never wait for a device transfer.
    """

    def __init__(self) -> None:
        self._resources = faiss.StandardGpuResources()

    def replicate(self, cpu_index: faiss.Index) -> faiss.Index | None:
        if isinstance(cpu_index, faiss.IndexHNSW):
            return None  # FAISS has no GPU HNSW
        try:
            return faiss.index_cpu_to_gpu(self._resources, 0, cpu_index)
        except RuntimeError as exc:  # e.g. GPU IVFPQ takes only some code sizes: search it on the CPU
            log.warning("no GPU replica for %s (%s); it is searched on the CPU", type(cpu_index).__name__, exc)
            return None
