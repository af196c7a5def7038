"""Array helpers every method uses: unit-normalising rows, and validating paired inputs."""

from __future__ import annotations

import numpy as np


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """float32 (n, d) with finite values, or a ValueError naming the input."""
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-d array, got shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return np.ascontiguousarray(arr)


def check_pairs(x_old: np.ndarray, x_new: np.ndarray, labels: np.ndarray | None) -> tuple:
    """Validated (x_old, x_new, labels): equal row counts, one label per row where given."""
    x_old, x_new = as_matrix(x_old, "x_old"), as_matrix(x_new, "x_new")
    if len(x_old) != len(x_new):
        raise ValueError(f"x_old has {len(x_old)} rows but x_new has {len(x_new)}; rows must be paired")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(x_old),):
            raise ValueError(f"labels must have shape ({len(x_old)},), got {labels.shape}")
    return x_old, x_new, labels
