"""Quality while a gallery migrates, replayed in numpy: the serving merges and the migration curve.

A gallery under upgrade A -> B holds every item's A vector (kept until A is retired) and, for the
share already re-embedded, a B vector. The service (service/core/merge.py) serves each item from
its best representation and places re-embedded items by *slots*: the transformation's ranking of
all items decides where re-embedded items go, the new model's own ranking which of them go first.
This module replays that merge (and the alternatives it was chosen against) on score matrices, so
the bundle can report the quality curve an operator watches during a migration and the benchmarks
can compare merges on the same pairs.

Every merge takes `native` (query vs gallery, both in the query's model: what a re-embedded item
scores), `routed` (query through the transformation vs every item's kept vector) and `in_new` (which
gallery items are re-embedded); each returns a score matrix whose row order is the merge's ranking.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from adapters.calibration import ScoreMap, scores
from adapters.metrics import scores_quality

LEVELS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
# When a new-model query keeps an item on the route it had before the migration instead of the
# item's new vector (service/core/merge.py): the route's measured quality -- per metric, the share
# of the query model's own top-1 and mAP@R it keeps -- is clearly above 1 (103 %) on held-out
# evidence of at least 300 pairs (on 48 held-out pairs a route measured 105 % of new/new by chance).
ROUTE_MARGIN = 0.03
TRUSTED_HOLDOUT = 300
METRICS = ("top1", "mAP@R")


def clearly_better(ratios: dict[str, float], holdout_pairs: int) -> bool:
    """A route measured clearly above the query model's own vector on at least one metric."""
    return holdout_pairs >= TRUSTED_HOLDOUT and max(ratios.values()) >= 1 + ROUTE_MARGIN


def quality_ratios(rows: dict[str, dict[str, float]], direction: str) -> dict[str, float]:
    """Per metric, the share of the query model's own retrieval a map keeps (held-out rows)."""
    routed, own = ("new/old", "new/new") if direction == "new->old" else ("old/new", "old/old")
    return {m: max(rows[routed][m], 1e-6) / max(rows[own][m], 1e-6) for m in METRICS}


def slot_merge(native: np.ndarray, routed: np.ndarray, in_new: np.ndarray) -> np.ndarray:
    """Routed ranking of every item; re-embedded items re-ordered natively inside their own slots."""
    out = np.empty(native.shape, dtype=np.float32)
    moved = np.flatnonzero(in_new)
    positions = -np.arange(native.shape[1], dtype=np.float32)
    for i in range(native.shape[0]):
        order = np.argsort(-routed[i], kind="stable")
        slots = np.flatnonzero(in_new[order])
        order[slots] = moved[np.argsort(-native[i, moved], kind="stable")]
        out[i, order] = positions
    return out


def _within_rank(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    ranks = np.zeros(values.shape, dtype=np.float64)
    cols = np.flatnonzero(members)
    if len(cols):
        ranks[:, cols] = np.argsort(np.argsort(-values[:, cols], axis=1, kind="stable"), axis=1)
    return ranks


def percentile_merge(native: np.ndarray, routed: np.ndarray, in_new: np.ndarray) -> np.ndarray:
    """Rank-based fusion: an item's rank inside its own partition over that partition's size."""
    n_new, n_old = max(int(in_new.sum()), 1), max(int((~in_new).sum()), 1)
    q_new = (_within_rank(native, in_new) + 0.5) / n_new
    q_old = (_within_rank(routed, ~in_new) + 0.5) / n_old
    return -np.where(in_new[None, :], q_new, q_old)


def score_merge(native: np.ndarray, routed: np.ndarray, in_new: np.ndarray, score_map: ScoreMap) -> np.ndarray:
    """Merge by score: native scores for re-embedded items, (calibrated) routed scores for the rest."""
    return np.where(in_new[None, :], native, score_map(routed))


def leave_one_out(matrix: np.ndarray) -> np.ndarray:
    """A copy with each query's own item (the diagonal) at -inf, so no merge places it."""
    out = np.array(matrix, dtype=np.float32)
    np.fill_diagonal(out, -np.inf)
    return out


def migration_curve(
    new_to_old: Callable[[np.ndarray], np.ndarray],
    old: np.ndarray,
    new: np.ndarray,
    relevant: np.ndarray,
    order: np.ndarray,
    stay_on_route: bool = False,
    metric_old: str = "cosine",
    metric_new: str = "cosine",
    levels: tuple[float, ...] = LEVELS,
) -> list[dict[str, float]]:
    """Quality of both client kinds as the held-out gallery is re-embedded in `order`, served as
    the service serves them: new-model queries by the slot merge (or from the old vectors
    throughout when `stay_on_route`: new/old measured clearly above new/new), old-model queries
    from the kept old vectors (old/old at every level, until the old version is retired)."""
    native = leave_one_out(scores(new, new, metric_new))
    routed = leave_one_out(scores(new_to_old(new), old, metric_old))
    old_old = scores_quality(scores(old, old, metric_old), relevant)
    curve = []
    for level in levels:
        in_new = np.zeros(len(new), dtype=bool)
        in_new[order[: int(round(level * len(new)))]] = True
        m = scores_quality(routed if stay_on_route else slot_merge(native, routed, in_new), relevant)
        curve.append({"share": float(level), "new_top1": m.top1, "new_mAP@R": m.mAP_at_R,
                      "old_top1": old_old.top1, "old_mAP@R": old_old.mAP_at_R})
    return curve
