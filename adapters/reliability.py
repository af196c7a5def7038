"""Which stored items to re-embed first: predict how badly each old vector fits the new space.

In the spirit of FastFill (methods.md): backfilling the items whose transformed representation is
least reliable first gains the most retrieval quality per re-embedded item. Here the old vectors
stay as they are and queries are transformed, so the item-side error is measured through the
old->new map psi: e_i = 1 - cos(psi(old_i), new_i) on training pairs -- how far the item's old
representation lands from where the new model puts it. A ridge regression from the (normalised)
old vector to e_i predicts the error for gallery items that have no new embedding yet; its Spearman
correlation with the true error on held-out pairs says whether the ordering is worth anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adapters.vectors import normalize


@dataclass
class ReliabilityModel:
    weight: np.ndarray  # (d_old,)
    bias: float

    def predict_error(self, old: np.ndarray) -> np.ndarray:
        return normalize(old) @ self.weight + np.float32(self.bias)


def item_errors(mapped_old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """1 - cosine between mapped old vectors and the items' real new vectors."""
    return 1.0 - np.sum(normalize(mapped_old) * normalize(new), axis=1)


def fit_reliability(old: np.ndarray, errors: np.ndarray, alpha: float = 1.0) -> ReliabilityModel:
    x = normalize(old).astype(np.float64)
    mean_x, mean_y = x.mean(0), float(errors.mean())
    xc = x - mean_x
    gram = xc.T @ xc + alpha * np.eye(x.shape[1])
    weight = np.linalg.solve(gram, xc.T @ (errors - mean_y))
    bias = mean_y - float(mean_x @ weight)
    return ReliabilityModel(weight.astype(np.float32), bias)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return float("nan")
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])
