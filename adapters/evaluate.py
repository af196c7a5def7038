"""Compatibility evaluation of an upgrade on held-out pairs: the four rows, ECC and gap closed.

Rows (methods.md): old/old, new/new, new/old without a transformation (near chance: it shows the
spaces differ; unequal widths are zero-padded or truncated to d_old), and new/old through each
transformation. Relevance is "same label" when test labels are given; without labels it is the
consensus neighbourhood (an item's k nearest neighbours under both models, see metrics.py), so
every row stays comparable, and the same-item pairing (Recall@1/10, MRR) is reported too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adapters.base import Adapter
from adapters.metrics import (
    RetrievalMetrics,
    consensus_neighbours,
    gap_closed,
    neighbour_metrics,
    pairing_metrics,
    passes_ecc,
    retrieval_metrics,
)
from adapters.vectors import as_matrix

PRIMARY = "mAP@R"  # the metric that decides ECC verdicts and method choice


@dataclass
class EvalSet:
    """Held-out pairs (and optional labels) with the relevance they define, computed once."""

    old: np.ndarray
    new: np.ndarray
    labels: np.ndarray | None = None
    neighbours: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.old, self.new = as_matrix(self.old, "old test"), as_matrix(self.new, "new test")
        if len(self.old) != len(self.new):
            raise ValueError(f"old test has {len(self.old)} rows, new test {len(self.new)}; rows must be paired")
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if self.labels.shape != (len(self.old),):
                raise ValueError(f"test labels must have shape ({len(self.old)},)")
        elif self.neighbours is None:
            self.neighbours = consensus_neighbours(self.old, self.new)

    @property
    def relevance(self) -> str:
        return "label" if self.labels is not None else "consensus-neighbours"

    def metrics(self, queries: np.ndarray, gallery: np.ndarray) -> RetrievalMetrics:
        if self.labels is not None:
            return retrieval_metrics(queries, gallery, self.labels)
        return neighbour_metrics(queries, gallery, self.neighbours)


def untransformed(new: np.ndarray, d_old: int) -> np.ndarray:
    """New vectors forced to the old width (zero-pad or truncate): the 'no transformation' row."""
    if new.shape[1] >= d_old:
        return new[:, :d_old]
    return np.hstack([new, np.zeros((len(new), d_old - new.shape[1]), dtype=new.dtype)])


def _row(m: RetrievalMetrics, extra: dict[str, float] | None = None) -> dict[str, float]:
    return {**m.as_dict(), **(extra or {})}


def baseline_rows(test: EvalSet) -> dict[str, dict[str, float]]:
    """old/old, new/new and new/old raw."""
    d_old = test.old.shape[1]
    raw = untransformed(test.new, d_old)
    rows = {
        "old/old": _row(test.metrics(test.old, test.old)),
        "new/new": _row(test.metrics(test.new, test.new)),
        "new/old raw": _row(test.metrics(raw, test.old)),
    }
    if test.labels is None:
        rows["new/old raw"].update(pairing_metrics(raw, test.old).as_dict())
    return rows


def method_row(adapter: Adapter, test: EvalSet, rows: dict[str, dict[str, float]]) -> dict[str, Any]:
    """new/old through `adapter`, with its ECC verdict and the share of the gap it closes."""
    queries = adapter.transform(test.new, test.old if adapter.needs_old_query else None)
    row = queries_row(queries, test, rows, pairing=not adapter.needs_old_query)
    row["fit_seconds"] = adapter.report.fit_seconds if adapter.report else 0.0
    return row


def queries_row(queries: np.ndarray, test: EvalSet, rows: dict[str, dict[str, float]],
                pairing: bool = True) -> dict[str, Any]:
    """new/old for queries already mapped into the old space (row i = test item i), with the ECC
    verdict and gap closed -- the part of `method_row` that does not need the adapter itself."""
    cross = _row(test.metrics(queries, test.old))
    if test.labels is None and pairing:
        cross.update(pairing_metrics(queries, test.old).as_dict())
    return cross_row(cross, rows)


def cross_row(cross: dict[str, float], rows: dict[str, dict[str, float]]) -> dict[str, Any]:
    """new/old metrics with their ECC verdicts and gap closed against the baseline rows (also used
    on metrics averaged over several evaluations, where the verdict must be taken on the means)."""
    old_old, new_new = rows["old/old"][PRIMARY], rows["new/new"][PRIMARY]
    return {
        "new/old": cross,
        "ecc": passes_ecc(cross[PRIMARY], old_old),
        "ecc_top1": passes_ecc(cross["top1"], rows["old/old"]["top1"]),
        "gap_closed": gap_closed(cross[PRIMARY], old_old, new_new),
    }


def choose(methods: dict[str, dict[str, Any]], ranking: dict[str, float] | None = None,
           exclude: set[str] = frozenset()) -> str | None:
    """The best method that passes the ECC -- highest `ranking` score, by default new/old mAP@R --
    or None when none passes."""
    passing = [name for name, r in methods.items() if r["ecc"] and name not in exclude]
    if not passing:
        return None
    score = ranking or {name: r["new/old"][PRIMARY] for name, r in methods.items()}
    return max(passing, key=score.get)
