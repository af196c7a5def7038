"""Affine least squares with ridge regularisation (closed form baseline).

Fit: rows L2-normalised; W, b minimise ||X_new W + b - X_old||^2 + alpha ||W||^2 (b unpenalised,
obtained by centring). alpha is chosen from `alphas` by the cosine error on a validation split
(10 % of the pairs, seeded), then the map is refitted on all pairs. A free affine map collapses
when d_new is much smaller than d_old and overfits few pairs; it is a baseline, not a default.
"""

from __future__ import annotations

import numpy as np

from adapters.base import Adapter, FitReport, ProgressFn
from adapters.moments import cross_moment, ridge_solution
from adapters.registry import register_method
from adapters.vectors import as_matrix, normalize


class RidgeSolver:
    """Ridge regressions y ~ x W of centred data for several alphas from one Gram matrix (float64)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.gram, self.cross = cross_moment(x, x), cross_moment(x, y)

    def solve(self, alpha: float) -> np.ndarray:
        return ridge_solution(self.gram, self.cross, alpha)


def centred_solver(x: np.ndarray, y: np.ndarray) -> tuple[RidgeSolver, np.ndarray, np.ndarray]:
    """A solver for y ~ x W + b (b unpenalised, obtained by centring) and the two means."""
    mx, my = x.mean(axis=0), y.mean(axis=0)
    return RidgeSolver(x - mx, y - my), mx, my


def ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of ridge regression y ~ x W + b, in float64 for stability."""
    solver, mx, my = centred_solver(x, y)
    w = solver.solve(alpha)
    return w, (my - mx @ w).astype(np.float32)


def cosine_error(pred: np.ndarray, target: np.ndarray) -> float:
    return float(1.0 - (normalize(pred) * normalize(target)).sum(axis=1).mean())


@register_method(candidate=True, baseline=True)
class Affine(Adapter):
    name = "affine"

    @classmethod
    def default_params(cls) -> dict:
        return {"alphas": [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0], "val_fraction": 0.1}

    def _fit(self, x_old, x_new, labels, seed, progress: ProgressFn) -> FitReport:
        o, w = normalize(x_old), normalize(x_new)
        alphas = list(self.params["alphas"])
        n_val = int(len(o) * self.params["val_fraction"])
        errors: dict[float, float] = {}
        if len(alphas) > 1 and n_val >= 10:
            perm = np.random.default_rng(seed).permutation(len(o))
            val, fit = perm[:n_val], perm[n_val:]
            solver, mx, my = centred_solver(w[fit], o[fit])  # one Gram matrix for every alpha
            for i, alpha in enumerate(alphas):
                weights = solver.solve(alpha)
                errors[alpha] = cosine_error(w[val] @ weights + (my - mx @ weights), o[val])
                progress((i + 1) / (len(alphas) + 1), f"affine: alpha={alpha:g} val error {errors[alpha]:.4f}")
            alpha = min(errors, key=errors.get)
        else:
            alpha = alphas[0]
        self.weight, self.bias = ridge(w, o, alpha)
        progress(1.0, f"affine: alpha={alpha:g}")
        return FitReport(method=self.name, steps=1, notes={"alpha": alpha,
                                                            "val_errors": {str(k): v for k, v in errors.items()}})

    def transform(self, x_new: np.ndarray, x_old: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        return normalize(as_matrix(x_new, "x_new")) @ self.weight + self.bias

    def tensors(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "bias": self.bias}

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        self.weight, self.bias = tensors["weight"], tensors["bias"]
