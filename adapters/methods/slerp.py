"""SLERP blending, for callers that can embed the query with both models.

Fit: a centred Procrustes map new -> old (see procrustes.py) on the training pairs minus a
validation split (20 %, seeded); then the blend weight alpha is chosen on the validation split
from a grid: the query becomes slerp(q_old, map(q_new); alpha), the spherical interpolation between
the old-model query (alpha = 0) and the mapped new-model query (alpha = 1), scored by mAP@R against
the old vectors (relevance: same label, or consensus neighbours without labels; see metrics.py).
Finally the map is refitted on all pairs. transform() needs both embeddings of the query.
"""

from __future__ import annotations

import numpy as np

from adapters.base import Adapter, FitReport, ProgressFn
from adapters.methods.procrustes import Procrustes
from adapters.metrics import consensus_neighbours, map_at_r, neighbour_map_at_r
from adapters.registry import register_method
from adapters.vectors import as_matrix, normalize


def slerp(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """Row-wise spherical interpolation between unit vectors a (alpha=0) and b (alpha=1)."""
    a, b = normalize(a), normalize(b)
    cos = np.clip((a * b).sum(axis=1, keepdims=True), -1.0, 1.0)
    theta = np.arccos(cos)
    sin = np.sin(theta)
    safe = sin > 1e-6
    wa = np.where(safe, np.sin((1 - alpha) * theta) / np.where(safe, sin, 1), 1 - alpha)
    wb = np.where(safe, np.sin(alpha * theta) / np.where(safe, sin, 1), alpha)
    return (wa * a + wb * b).astype(np.float32)


@register_method()
class Slerp(Adapter):
    name = "slerp"
    uses_labels = True  # labels only steer the choice of alpha
    needs_old_query = True

    @classmethod
    def default_params(cls) -> dict:
        return {"alphas": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], "val_fraction": 0.2}

    def _fit(self, x_old, x_new, labels, seed, progress: ProgressFn) -> FitReport:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(x_old))
        n_val = int(len(perm) * self.params["val_fraction"])
        scores: dict[float, float] = {}
        alphas = list(self.params["alphas"])
        if n_val >= 20 and len(alphas) > 1:
            val, fit = perm[:n_val], perm[n_val:]
            probe = Procrustes()
            probe.fit(x_old[fit], x_new[fit], seed=seed)
            mapped = probe.transform(x_new[val])
            relevance = None if labels is not None else consensus_neighbours(x_old[val], x_new[val])
            for i, alpha in enumerate(alphas):
                q = slerp(x_old[val], mapped, alpha)
                if labels is not None:
                    scores[alpha] = map_at_r(q, x_old[val], labels[val])
                else:
                    scores[alpha] = neighbour_map_at_r(q, x_old[val], relevance)
                progress((i + 1) / (len(alphas) + 1), f"slerp: alpha={alpha:g} mAP@R {scores[alpha]:.4f}")
            self.alpha = max(scores, key=lambda a: (scores[a], a))
        else:
            self.alpha = 0.5
        self.map = Procrustes()
        self.map.fit(x_old, x_new, seed=seed)
        return FitReport(method=self.name, steps=1,
                         notes={"alpha": self.alpha, "val_mAP@R": {str(k): v for k, v in scores.items()}})

    def transform(self, x_new: np.ndarray, x_old: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        if x_old is None:
            raise ValueError("slerp needs the query embedded by both models (x_old)")
        return slerp(as_matrix(x_old, "x_old"), self.map.transform(x_new), self.alpha)

    def tensors(self) -> dict[str, np.ndarray]:
        return {**self.map.tensors(), "alpha": np.array([self.alpha], dtype=np.float32)}

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        self.alpha = float(tensors.pop("alpha")[0])
        self.map = Procrustes()
        self.map.d_old, self.map.d_new = self.d_old, self.d_new
        self.map.load_tensors(tensors)
