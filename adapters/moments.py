"""Second moments of paired vectors: the one pass over the data every closed-form map needs.

Procrustes, ridge and the adjoint see the training pairs only through X^T X, Y^T Y and X^T Y.
Two things make that pass cheap at 100k pairs of 768-d:
- blocks of rows are multiplied in float32 (BLAS sgemm, about twice dgemm's speed on these cores,
  and no float64 copy of the whole matrix) and summed in float64, so rounding stays at the
  level of one block's float32 sum (~1e-6 relative, far below the smallest ridge alpha's effect);
- moments add over disjoint rows, so k-fold cross-validation computes each fold's moments once
  and gets every fit set as total - fold: one pass instead of k - 1 (`PairMoments`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK_ROWS = 8_192


def cross_moment(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x^T y in float64, summed over float32 row blocks."""
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same number of rows, got {len(x)} and {len(y)}")
    out = np.zeros((x.shape[1], y.shape[1]), dtype=np.float64)
    for start in range(0, len(x), BLOCK_ROWS):
        xb = np.asarray(x[start : start + BLOCK_ROWS], dtype=np.float32)
        yb = xb if y is x else np.asarray(y[start : start + BLOCK_ROWS], dtype=np.float32)
        out += xb.T @ yb
    return out


def ridge_solution(gram: np.ndarray, cross: np.ndarray, alpha: float) -> np.ndarray:
    """argmin_W ||X W - Y||^2 + alpha ||W||^2 from gram = X^T X and cross = X^T Y (float32 result)."""
    return np.linalg.solve(gram + alpha * np.eye(gram.shape[0]), cross).astype(np.float32)


@dataclass(frozen=True)
class PairMoments:
    """X^T X, Y^T Y and X^T Y of one set of paired rows; adding and subtracting combine disjoint sets."""

    xx: np.ndarray
    yy: np.ndarray
    xy: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> PairMoments:
        return cls(cross_moment(x, x), cross_moment(y, y), cross_moment(x, y))

    def __add__(self, other: PairMoments) -> PairMoments:
        return PairMoments(self.xx + other.xx, self.yy + other.yy, self.xy + other.xy)

    def __sub__(self, other: PairMoments) -> PairMoments:
        return PairMoments(self.xx - other.xx, self.yy - other.yy, self.xy - other.xy)

    def ridge_x_to_y(self, alpha: float) -> np.ndarray:
        """W with X W ~ Y."""
        return ridge_solution(self.xx, self.xy, alpha)

    def ridge_y_to_x(self, alpha: float) -> np.ndarray:
        """W with Y W ~ X."""
        return ridge_solution(self.yy, self.xy.T, alpha)
