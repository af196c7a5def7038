"""Adapters by name: create one to fit, or load one that was saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapters.adjoint import Adjoint
from adapters.affine import Affine
from adapters.auto import Auto
from adapters.base import CONFIG_FILE, Adapter, restore_common
from adapters.bt2 import BT2
from adapters.lambda_orth import LambdaOrth
from adapters.oca import OCA
from adapters.procrustes import Procrustes
from adapters.slerp import Slerp

METHODS: dict[str, type[Adapter]] = {
    cls.name: cls for cls in (Procrustes, Affine, Adjoint, LambdaOrth, OCA, BT2, Slerp, Auto)
}


def create(name: str, **params: Any) -> Adapter:
    try:
        cls = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None
    return cls(**params)


def load(directory: Path | str) -> Adapter:
    """Load an adapter written by `Adapter.save`."""
    directory = Path(directory)
    config = json.loads((directory / CONFIG_FILE).read_text())
    adapter = create(config["method"], **config["params"])
    if isinstance(adapter, Auto):
        inner = config["selected"]
        adapter.chosen = create(inner["method"], **inner["params"])
        adapter.chosen.d_old, adapter.chosen.d_new = inner["d_old"], inner["d_new"]
    return restore_common(adapter, config, directory)
