"""`adjoint`: regress the gallery old -> new, apply the regression's adjoint to the query (closed form).

Why: the best score we know for a new-model query q against item j is the new model's own
similarity <q, n_j>, but item j is stored only as its old vector o_j. A linear regression
G: old -> new predicts n_j from o_j, and <q, G o_j> = <G^T q, o_j>: applying the *transpose* of
G to the query scores every stored old vector as if it had been re-embedded by G, with no
re-indexing (the gallery-side regression of FastFill-style backfills, moved to the query side).
Procrustes and ridge instead map the query onto its own old vector (point-wise alignment); on
WordNet-4k the adjoint ranks better wherever the new model's neighbourhoods are better than the
old model's (docs/adapters.md has the numbers).

Fit (rows L2-normalised, means mu_old, mu_new removed):
- G = argmin ||(O - mu_old) G - (N - mu_new)||^2 + alpha ||G||^2   (d_old x d_new, old -> new)
- F = argmin ||(N - mu_new) F - (O - mu_old)||^2 + alpha ||F||^2   (d_new x d_old, new -> old)
Transform: with w = normalize(q) - mu_new,
    z = (1 - t) * normalize(w F) + t * normalize(w G^T)
t = 1 is the pure adjoint, t = 0 the centred direct ridge; for one query the mu_old offset and any
per-query scale do not change the ranking, so z is searched by cosine like any other map.
(alpha, t) are chosen by k-fold cross-validation on the training pairs, scored by new/old mAP@R
on each held-out fold -- with labels, folds hold out whole classes and relevance is the label
(labels are used for this choice only); without, relevance is the consensus neighbourhood (an
item's neighbours under both models), which keeps the blend balanced between the two geometries
(ranking blends by clusters of the new model's embeddings instead pushed t to 1 and cost top-1 on
WordNet: docs/adapters.md) -- then G and F are refitted on all pairs.
Forward map (old -> new, for old-model queries against re-embedded items): G itself.
Cost: one pass over the pairs for the moments of each fold (O(n d^2) in all: a fold's fit set is
total - fold, adapters/moments.py), one d x d solve per alpha and fold; the held-out part of a
fold is capped at `max_fold_eval` items for scoring.
"""

from __future__ import annotations

import numpy as np

from adapters.base import Adapter, FitReport, ProgressFn
from adapters.metrics import consensus_neighbours, map_at_r, neighbour_map_at_r
from adapters.moments import PairMoments
from adapters.registry import register_method
from adapters.vectors import as_matrix, normalize


def fold_indices(n: int, labels: np.ndarray | None, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out index sets for k-fold cross-validation. With labels, whole classes are held out
    together: a gallery's new content tends to be new categories, and a choice tuned on classes
    the maps were fitted on overrates the blends that fit those classes best."""
    rng = np.random.default_rng(seed)
    if labels is not None:
        classes, codes = np.unique(labels, return_inverse=True)
        if len(classes) >= folds:
            fold_of_class = np.empty(len(classes), dtype=np.int64)
            fold_of_class[rng.permutation(len(classes))] = np.arange(len(classes)) % folds
            return [rng.permutation(np.flatnonzero(fold_of_class[codes] == f)) for f in range(folds)]
    return np.array_split(rng.permutation(n), folds)


def blend(w: np.ndarray, direct: np.ndarray, adjoint: np.ndarray, t: float) -> np.ndarray:
    """Centred new vectors `w` -> (1 - t) * normalize(w F) + t * normalize(w G^T)."""
    return (1.0 - t) * normalize(w @ direct) + t * normalize(w @ adjoint.T)


@register_method(candidate=True)
class Adjoint(Adapter):
    name = "adjoint"
    uses_labels = True  # labels only sharpen the choice of (alpha, t); the maps never see them

    @classmethod
    def default_params(cls) -> dict:
        return {"alphas": [0.1, 1.0, 10.0], "blends": [0.0, 0.25, 0.5, 0.75, 1.0], "folds": 5,
                "max_fold_eval": 2_000}

    def _fit(self, x_old, x_new, labels, seed, progress: ProgressFn) -> FitReport:
        o, w = normalize(x_old), normalize(x_new)
        self.mu_old, self.mu_new = o.mean(axis=0), w.mean(axis=0)
        oc, wc = o - self.mu_old, w - self.mu_new
        parts = self._folds(len(oc), labels, seed)
        fold_moments = [PairMoments.of(oc[held], wc[held]) for held in parts]
        total = sum(fold_moments[1:], fold_moments[0]) if parts else PairMoments.of(oc, wc)
        scores = self._cross_validate(oc, wc, labels, parts, fold_moments, total, progress)
        if scores:
            alpha, t = max(scores, key=scores.get)
        else:  # too few pairs to hold any out
            alpha, t = 1.0, 1.0
        self.adjoint = total.ridge_x_to_y(alpha)  # G: old -> new
        self.direct = total.ridge_y_to_x(alpha)  # F: new -> old
        self.blend = np.array([t], dtype=np.float32)
        progress(1.0, f"adjoint: alpha={alpha:g} t={t:g}")
        return FitReport(method=self.name, steps=1, notes={
            "alpha": alpha, "blend": t, "val_objective": "new/old mAP@R, k-fold",
            "cv_mAP@R": {f"alpha={a:g},t={b:g}": round(v, 5) for (a, b), v in scores.items()}})

    def _folds(self, n: int, labels: np.ndarray | None, seed: int) -> list[np.ndarray]:
        folds = min(int(self.params["folds"]), n // 20)
        return fold_indices(n, labels, folds, seed) if folds >= 2 else []

    def _cross_validate(self, oc: np.ndarray, wc: np.ndarray, labels: np.ndarray | None, parts: list[np.ndarray],
                        fold_moments: list[PairMoments], total: PairMoments,
                        progress: ProgressFn) -> dict[tuple[float, float], float]:
        """Mean held-out mAP@R per (alpha, t) over the folds; each fold's maps come from the
        moments of all pairs less that fold's (the same regressions as refitting on the rest)."""
        totals: dict[tuple[float, float], float] = {}
        for f, held in enumerate(parts):
            fit = total - fold_moments[f]
            held = held[: int(self.params["max_fold_eval"])]
            gallery = oc[held] + self.mu_old
            neighbours = None if labels is not None else consensus_neighbours(gallery, wc[held] + self.mu_new)
            for alpha in self.params["alphas"]:
                g, d = fit.ridge_x_to_y(alpha), fit.ridge_y_to_x(alpha)
                for t in self.params["blends"]:
                    queries = blend(wc[held], d, g, float(t))
                    if neighbours is None:
                        score = map_at_r(queries, gallery, labels[held])
                    else:
                        score = neighbour_map_at_r(queries, gallery, neighbours)
                    key = (float(alpha), float(t))
                    totals[key] = totals.get(key, 0.0) + score / len(parts)
            progress((f + 1) / (len(parts) + 1), f"adjoint: fold {f + 1}/{len(parts)}")
        return totals

    def transform(self, x_new: np.ndarray, x_old: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        w = normalize(as_matrix(x_new, "x_new")) - self.mu_new
        return blend(w, self.direct, self.adjoint, float(self.blend[0]))

    def forward(self, x_old: np.ndarray) -> np.ndarray:
        """Old -> new with the regression G (the gallery-side map whose adjoint serves queries)."""
        self._require_fitted()
        return (normalize(as_matrix(x_old, "x_old")) - self.mu_old) @ self.adjoint + self.mu_new

    def tensors(self) -> dict[str, np.ndarray]:
        return {"adjoint": self.adjoint, "direct": self.direct, "blend": self.blend,
                "mu_old": self.mu_old, "mu_new": self.mu_new}

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        self.adjoint, self.direct, self.blend = tensors["adjoint"], tensors["direct"], tensors["blend"]
        self.mu_old, self.mu_new = tensors["mu_old"], tensors["mu_new"]
