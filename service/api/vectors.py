"""Turning request vectors (JSON lists or base64 float32) into validated numpy arrays.

Validation happens before anything is written, so a bad vector anywhere in a batch rejects the
whole batch and leaves the store untouched.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import numpy as np

from service.core.errors import Invalid, TooLarge

FLOAT32_LE = np.dtype("<f4")


def decode_b64(text: str, field: str) -> np.ndarray:
    """Base64 of little-endian float32 values -> 1-d float32 array."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("is not valid base64", field) from None
    if len(raw) % 4:
        raise Invalid(f"decodes to {len(raw)} bytes, not a whole number of float32 values", field)
    return np.frombuffer(raw, dtype=FLOAT32_LE).astype(np.float32)


def encode_b64(vector: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vector, dtype=FLOAT32_LE).tobytes()).decode("ascii")


def check_matrix(matrix: np.ndarray, dim: int, field: str, row_fields: Sequence[str] | None = None,
                 metric: str | None = None) -> np.ndarray:
    """Reject wrong dimensions and non-finite values, naming the first offending row; under cosine
    also all-zero rows, which have no direction (stored, one would match everything at score 0)."""
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        width = matrix.shape[1] if matrix.ndim == 2 else matrix.size
        raise Invalid(f"has dimension {width}, the model expects {dim}", field)

    def where(row: int) -> str:
        return row_fields[row] if row_fields else f"{field}[{row}]"

    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise Invalid("contains NaN or infinity", where(int(np.argmax(bad))))
    if metric == "cosine":
        zero = ~matrix.any(axis=1)
        if zero.any():
            raise Invalid("is all zeros: a cosine model's vectors need a direction", where(int(np.argmax(zero))))
    return matrix


def stack_rows(rows: Sequence[np.ndarray], dim: int, fields: Sequence[str], metric: str | None = None) -> np.ndarray:
    """Stack per-item vectors after checking each one's length (so the error names the item)."""
    for row, field in zip(rows, fields, strict=True):
        if row.shape != (dim,):
            raise Invalid(f"has dimension {row.size}, the model expects {dim}", field)
    matrix = np.vstack(rows).astype(np.float32, copy=False) if rows else np.empty((0, dim), np.float32)
    return check_matrix(matrix, dim, "items", fields, metric)


def read_matrix(
    rows: Sequence[Sequence[float]] | None, b64: str | None, dim: int, list_field: str, b64_field: str,
    max_rows: int, metric: str | None = None,
) -> np.ndarray:
    """An (n, dim) matrix given as JSON rows or as base64 of n*dim float32 values, validated."""
    if rows is not None:
        for i, row in enumerate(rows):
            if len(row) != dim:
                raise Invalid(f"has dimension {len(row)}, the model expects {dim}", f"{list_field}[{i}]")
        field, matrix = list_field, np.asarray(rows, dtype=np.float32).reshape(len(rows), dim)
    elif b64 is not None:
        field, flat = b64_field, decode_b64(b64, b64_field)
        if flat.size % dim:
            raise Invalid(f"holds {flat.size} values, not a multiple of the model dimension {dim}", field)
        matrix = flat.reshape(-1, dim)
    else:
        raise Invalid(f"give {list_field} or {b64_field}", list_field)
    if len(matrix) == 0:
        raise Invalid("must contain at least one vector", field)
    if len(matrix) > max_rows:
        raise TooLarge(f"has {len(matrix)} vectors; the limit is {max_rows}", field)
    return check_matrix(matrix, dim, field, metric=metric)
