"""The Milvus backend, for galleries that outgrow one machine or teams that already run Milvus.

`backend.py` implements `IndexBackend` over `pymilvus.MilvusClient` (a local path = embedded
Milvus Lite; `http://host:19530` = a Milvus server or cluster); `names.py` derives collection
names from integer ids; `params.py` maps `IndexSpec` and metrics to Milvus parameters.

pymilvus (with grpc and pandas: ~88 MB resident and ~0.3 s) is imported by `build`, not by this
package: the settings check Milvus prefixes with `names.py` in every process, FAISS ones included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from index.milvus.backend import MilvusBackend


def build(uri: str, token: str | None = None, prefix: str = "nobackfill_", refresh_seconds: float = 1.0,
          flush_seconds: float = 2.0, **options: Any) -> MilvusBackend:
    """The backend `index.create_backend("milvus", ...)` returns."""
    from index.milvus.backend import MilvusBackend

    if options:
        raise ValueError(f"milvus backend: unknown options {sorted(options)}")
    return MilvusBackend(uri, token=token, prefix=prefix, refresh_seconds=refresh_seconds,
                         flush_seconds=flush_seconds)


__all__ = ["build"]
