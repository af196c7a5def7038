"""`neighbour_memory`: the adjoint's query plus the old vectors of the query's nearest training pairs.

Why: every other map here is a function of the query alone, fitted to all pairs at once, so
with many unlabelled pairs (a re-embedded sample of the gallery) it still ranks the stored old
vectors no better than one linear (or small residual) map can. The pairs themselves say more:
the training pairs nearest to a new-model query *by the new model* are items the new model calls
alike, and their *old* vectors show where such items sit in the stored gallery. Their mean is a
query expansion in the old space (pseudo-relevance feedback with the pairs as the feedback set,
or Nadaraya-Watson regression new -> old with a k-nearest-neighbour kernel), and it carries the
new model's neighbourhoods into the old space where a linear map cannot. Added to the adjoint's
query, it keeps the adjoint's item-level precision (the memory alone loses top-1: it blurs the
query toward its neighbourhood):

    z = normalize(adjoint(q)) + beta * normalize(mean_{j in kNN(q)} o_j)
    kNN(q): the k memory pairs with the highest cosine <q, n_j>, n_j and o_j normalised

The gallery is untouched (a query-side map: no re-indexing). Defaults k = 30, beta = 0.5, chosen
label-free-fitted on WordNet-20k only (16k pairs fitted, 4k held-out pairs scored with their
labels, all five encoder pairs of bench.compat, 2026-12-07: every pair above the adjoint on top-1
and mAP@R there; docs/adapters.md), never on WordNet-4k, which bench.label_free reports on.
Memory: at most `max_memory` pairs (a seeded random sample), kept as float16, so a bundle is about
2 * (d_new + d_old) bytes per pair (16,384 pairs of 768 + 384 dims: 38 MB; twice that in memory once
loaded, where it is kept widened to float32 for searching) and a query costs one (memory x d_new) product: 0.94 ms
a single query at 16k x 768 on this 2-core machine, against 0.04 ms for the adjoint alone. With few
pairs the memory holds few neighbourhoods, hence `auto` offers it only from `auto_min_pairs`
fitting pairs.
Labels only reach the inner adjoint (its choice of alpha and blend). Forward map: the adjoint's G.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from adapters.base import Adapter, FitReport, ProgressFn
from adapters.methods.adjoint import Adjoint
from adapters.registry import register_method
from adapters.vectors import as_matrix, normalize

INNER = "adjoint."  # tensor-name prefix of the inner adjoint's arrays
QUERY_CHUNK = 1_024  # queries per (chunk x memory) similarity block: bounds transform's memory


@register_method(candidate=True)
class NeighbourMemory(Adapter):
    name = "neighbour_memory"
    uses_labels = True  # for the inner adjoint's cross-validation only
    auto_min_pairs: ClassVar[int] = 10_000

    @classmethod
    def default_params(cls) -> dict:
        return {"k": 30, "beta": 0.5, "max_memory": 16_384}

    def __init__(self, **params) -> None:
        """Checked here, so that a training request with bad parameters is refused (422) before a job starts."""
        super().__init__(**params)
        for name in ("k", "max_memory"):
            value = self.params[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.name}: {name} must be an integer >= 1, got {value!r}")
        beta = self.params["beta"]
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta < float("inf"):
            raise ValueError(f"{self.name}: beta must be a finite number >= 0, got {beta!r}")

    def _fit(self, x_old, x_new, labels, seed, progress: ProgressFn) -> FitReport:
        k, beta, cap = self.params["k"], float(self.params["beta"]), self.params["max_memory"]
        self.adjoint = Adjoint()
        inner = self.adjoint.fit(x_old, x_new, labels, seed=seed,
                                 progress=lambda f, m: progress(0.9 * f, m))
        rows = np.arange(len(x_old))
        if len(rows) > cap:
            rows = np.sort(np.random.default_rng(seed).choice(rows, size=cap, replace=False))
        self._keep(normalize(x_new[rows]).astype(np.float16), normalize(x_old[rows]).astype(np.float16))
        progress(1.0, f"{self.name}: {len(rows):,} pairs in memory, k={k}, beta={beta:g}")
        return FitReport(method=self.name, steps=1, notes={
            "memory_pairs": len(rows), "k": min(k, len(rows)), "beta": beta, "adjoint": inner.notes})

    def transform(self, x_new: np.ndarray, x_old: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        x_new = as_matrix(x_new, "x_new")
        base = normalize(self.adjoint.transform(x_new))
        return base + float(self.params["beta"]) * self._neighbour_means(normalize(x_new))

    def _keep(self, memory_new: np.ndarray, memory_old: np.ndarray) -> None:
        """Keep the float16 memory (what a bundle holds) widened once to float32 for searching: widening
        per call cost ~25 ms a query at 16k x 768. Only the widened copy is kept; the float16 form is
        derived from it exactly when a bundle is saved."""
        self._memory_new, self._memory_old = memory_new.astype(np.float32), memory_old.astype(np.float32)

    @property
    def memory_new(self) -> np.ndarray:
        """The kept pairs' new vectors as a bundle stores them (float16)."""
        return self._memory_new.astype(np.float16)

    @property
    def memory_old(self) -> np.ndarray:
        """The kept pairs' old vectors as a bundle stores them (float16)."""
        return self._memory_old.astype(np.float16)

    def _neighbour_means(self, q: np.ndarray) -> np.ndarray:
        """Per query: the normalised mean old vector of its k nearest memory pairs (by the new model)."""
        memory_new, memory_old = self._memory_new, self._memory_old
        k = min(int(self.params["k"]), len(memory_new))
        out = np.empty((len(q), memory_old.shape[1]), dtype=np.float32)
        for start in range(0, len(q), QUERY_CHUNK):
            sims = q[start : start + QUERY_CHUNK] @ memory_new.T
            nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(memory_new) else \
                np.broadcast_to(np.arange(k), (len(sims), k))
            out[start : start + len(sims)] = memory_old[nearest].mean(axis=1)
        return normalize(out)

    def forward(self, x_old: np.ndarray) -> np.ndarray:
        self._require_fitted()
        return self.adjoint.forward(x_old)

    def tensors(self) -> dict[str, np.ndarray]:
        return {**{INNER + name: value for name, value in self.adjoint.tensors().items()},
                "memory_new": self.memory_new, "memory_old": self.memory_old}

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        self.adjoint = Adjoint()
        self.adjoint.d_old, self.adjoint.d_new = self.d_old, self.d_new
        self.adjoint.load_tensors({name[len(INNER):]: value for name, value in tensors.items()
                                   if name.startswith(INNER)})
        self._keep(tensors["memory_new"], tensors["memory_old"])
