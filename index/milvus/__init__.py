"""The Milvus backend, for galleries that outgrow one machine or teams that already run Milvus.

`backend.py` implements `IndexBackend` over `pymilvus.MilvusClient` (a local path = embedded
Milvus Lite; `http://host:19530` = a Milvus server or cluster); `names.py` derives collection
names from integer ids; `params.py` maps `IndexSpec` and metrics to Milvus parameters.
"""

from __future__ import annotations

from typing import Any

from index.milvus.backend import MilvusBackend


def build(uri: str, token: str | None = None, prefix: str = "nobackfill_", refresh_seconds: float = 1.0,
          flush_seconds: float = 2.0, **options: Any) -> MilvusBackend:
    """The backend `index.create_backend("milvus", ...)` returns."""
    if options:
        raise ValueError(f"milvus backend: unknown options {sorted(options)}")
    return MilvusBackend(uri, token=token, prefix=prefix, refresh_seconds=refresh_seconds,
                         flush_seconds=flush_seconds)


__all__ = ["MilvusBackend", "build"]
