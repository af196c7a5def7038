"""Build the configured index backend by name, so the service never names a backend class.

Every sub-package of `index/` is a backend, named after its folder, and exposes
`build(**options) -> IndexBackend`. A new backend is therefore one new folder; it is imported only
when chosen, so a backend whose client library is missing costs nothing until then.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from index.backend import IndexBackend


def available_backends() -> list[str]:
    """The backend names: the sub-packages of `index/` (sorted)."""
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.ispkg)


def create_backend(name: str, **options: Any) -> IndexBackend:
    """The backend called `name`, built with its options (e.g. `directory`, `device`, `threads`)."""
    names = available_backends()
    if name not in names:
        raise ValueError(f"unknown index backend {name!r}; choose from {', '.join(names)}")
    return importlib.import_module(f"index.{name}").build(**options)
