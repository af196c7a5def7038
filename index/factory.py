"""Build the configured index backend by name, so the service never names a backend class.

Each backend registers a builder here; a new backend is one sub-package of `index/` plus one
entry. Builders are imported lazily, so a backend whose client library is missing costs nothing
until it is chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from index.backend import IndexBackend


def _faiss(directory: Path | None = None, device: str = "cpu", threads: int | None = None,
           **options: Any) -> IndexBackend:
    if options:
        raise ValueError(f"faiss backend: unknown options {sorted(options)}")
    from index.faiss import FaissBackend

    return FaissBackend(directory, device=device, threads=threads)  # type: ignore[arg-type]


BACKENDS: dict[str, Callable[..., IndexBackend]] = {"faiss": _faiss}


def create_backend(name: str, **options: Any) -> IndexBackend:
    """The backend called `name`, built with its options (e.g. `directory`, `device`, `threads`)."""
    try:
        builder = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown index backend {name!r}; choose from {', '.join(BACKENDS)}") from None
    return builder(**options)
