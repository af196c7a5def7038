"""`auto`: fit every applicable method, score each on held-out training pairs, keep the best.

Selection happens on pairs the candidates did not train on, carved from the *training* pairs
(never from the caller's test set):
- with labels, the held-out part mixes two kinds of item: every item of ~half the held-out
  fraction's worth of whole classes (unseen categories -- what a gallery's new content looks
  like) and a stratified sample of the remaining classes. Label-supervised methods shine on seen
  classes and can hurt on unseen ones (methods.md), so judging on both keeps `auto` honest;
- without labels, a random 20 %.
Each candidate gets the four-row evaluation of evaluate.py on that part (its ECC verdict included);
the winner is the method with the highest new/old mAP@R among those that pass the ECC (or the
highest overall, flagged, when none does). Without labels the ECC verdict uses the neutral
consensus-neighbour relevance, but the *ranking* uses pseudo-labels -- spherical k-means clusters
of the held-out items' new embeddings (metrics.cluster_labels) -- because consensus neighbours are
old-model neighbours by construction and so always favour mapping a query onto its own old vector
(Procrustes), even where labels show other maps retrieve the right category far better
(docs/adapters.md). The winner is then refitted on all training pairs. Methods that need the query in both
models (slerp) are not candidates: a plain new-model query cannot use them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adapters.base import Adapter, FitReport, ProgressFn
from adapters.evaluate import PRIMARY, EvalSet, baseline_rows, choose, method_row
from adapters.metrics import cluster_labels, retrieval_metrics

CANDIDATES = ["procrustes", "affine", "adjoint", "lambda_orth", "oca", "bt2"]


def holdout_split(n: int, labels: np.ndarray | None, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices) as described in the module docstring."""
    rng = np.random.default_rng(seed)
    if labels is None:
        perm = rng.permutation(n)
        n_hold = max(1, int(n * fraction))
        return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])
    classes, codes = np.unique(labels, return_inverse=True)
    held_classes = rng.permutation(len(classes))[: max(1, int(round(len(classes) * fraction / 2)))]
    unseen = np.isin(codes, held_classes) if len(classes) >= 4 else np.zeros(n, dtype=bool)
    hold = list(np.flatnonzero(unseen))
    for c in np.setdiff1d(np.arange(len(classes)), held_classes if len(classes) >= 4 else []):
        members = rng.permutation(np.flatnonzero(codes == c))
        take = int(len(members) * fraction / 2)
        hold.extend(members[:take])
    hold = np.sort(np.asarray(hold, dtype=np.int64))
    fit = np.setdiff1d(np.arange(n), hold)
    return fit, hold


class Auto(Adapter):
    name = "auto"
    uses_labels = True

    @classmethod
    def default_params(cls) -> dict:
        return {"methods": list(CANDIDATES), "holdout_fraction": 0.2, "method_params": {}}

    def _fit(self, x_old, x_new, labels, seed, progress: ProgressFn) -> FitReport:
        from adapters.registry import create

        names = [m for m in self.params["methods"] if m not in {"auto", "slerp"}]
        fit, hold = holdout_split(len(x_old), labels, self.params["holdout_fraction"], seed)
        test = EvalSet(x_old[hold], x_new[hold], None if labels is None else labels[hold])
        rows = baseline_rows(test)
        # without labels, rank by the new model's clusters (see the module docstring)
        pseudo = None if labels is not None else cluster_labels(test.new, seed=seed)
        results: dict[str, dict[str, Any]] = {}
        steps = len(names) + 1
        for i, name in enumerate(names):
            def sub(fraction: float, message: str, i: int = i) -> None:
                progress((i + fraction) / steps, message)

            candidate = create(name, **self.params["method_params"].get(name, {}))
            candidate.fit(x_old[fit], x_new[fit], None if labels is None else labels[fit], seed=seed, progress=sub)
            results[name] = method_row(candidate, test, rows)
            if pseudo is not None:
                mapped = candidate.transform(test.new)
                results[name]["selection_mAP@R"] = retrieval_metrics(mapped, test.old, pseudo).mAP_at_R
        ranking = {name: r.get("selection_mAP@R", r["new/old"][PRIMARY]) for name, r in results.items()}
        chosen = choose(results, ranking)
        passed = chosen is not None
        if chosen is None:
            chosen = max(results, key=ranking.get)
        progress(len(names) / steps, f"auto: refitting {chosen} on all pairs")
        self.chosen = create(chosen, **self.params["method_params"].get(chosen, {}))
        inner = self.chosen.fit(x_old, x_new, labels, seed=seed,
                                progress=lambda f, m: progress((len(names) + f) / steps, m))
        return FitReport(
            method=self.name,
            steps=inner.steps,
            curve=inner.curve,
            notes={"selected": chosen, "selected_passes_ecc": passed, "holdout_rows": rows,
                   "candidates": results, "holdout_size": len(hold),
                   "holdout_relevance": test.relevance, "selected_report": inner.as_dict()},
        )

    def transform(self, x_new: np.ndarray, x_old: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        return self.chosen.transform(x_new, x_old)

    def transform_new(self, x_new: np.ndarray) -> np.ndarray:
        return self.chosen.transform_new(x_new)

    def forward(self, x_old: np.ndarray) -> np.ndarray | None:
        return self.chosen.forward(x_old)

    def config(self) -> dict:
        return {**super().config(), "selected": self.chosen.config()}

    def tensors(self) -> dict[str, np.ndarray]:
        return self.chosen.tensors()

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        self.chosen.load_tensors(tensors)
