"""Score calibration: put similarities found through a transformation on the query model's own scale.

A mixed gallery is searched partition by partition: items stored in the query's model are scored
natively (e.g. new/new cosine), items stored in an older model through the transformation (cosine
of the transformed query with the old vector). The two kinds of score are not on one scale -- a
transformed cosine of 0.6 may correspond to a native 0.75 -- so merging raw scores would rank one
partition above the other regardless of relevance.

Fit, on held-out pairs (items embedded by both models): for every held-out query i take its
`top` best gallery items j by the *routed* score s_r(i, j), and regress the *native* score the
same pair gets when both sides are in the query's model, s_n(i, j), on s_r(i, j):
    s_n ~ a * s_r + b        (least squares)
At query time a routed score s becomes a*s + b: an estimate of the score the item would have had
if it were stored in the query's model. Restricting the fit to each query's top neighbours fits the
region that decides top-k merges, not the mass of unrelated pairs. `top` scales with the number
of held-out pairs (5 %), so the fitted region is the same share of the gallery whatever its size.

A second candidate matches distributions instead of pairs: each held-out query's top routed
scores, sorted, against its own top native scores, sorted (`fit_distribution_map`). Regression
shrinks routed scores toward the mean, which favours the native partition; distribution matching
does not. Which one merges better differs by upgrade and direction (measured on WordNet: for
static64 -> minilm new-model queries regression wins, for old-model queries distribution matching
does -- regression made them *dip* mid-migration), so `select_score_map` simulates a half-migrated
gallery on the held-out pairs and keeps the candidate (or the identity) with the best mAP@R.

With few held-out pairs the slope is noise (on 48 WordNet pairs it moved from 1.1 to 1.8 with the
choice of `top` and lowered mixed-gallery mAP@R below the raw merge), so below `min_pairs` held-out
items the map stays the identity and says so (`calibrated: false`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from adapters.metrics import DEFAULT_CHUNK
from adapters.vectors import normalize


@dataclass(frozen=True)
class ScoreMap:
    """s -> a*s + b, with the fit's quality (r2 on the fitted pairs) for reporting."""

    a: float = 1.0
    b: float = 0.0
    r2: float = 1.0
    pairs: int = 0
    calibrated: bool = False
    kind: str = "identity"

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return scores * np.float32(self.a) + np.float32(self.b)

    def then(self, outer: ScoreMap) -> ScoreMap:
        """Composition outer(self(s)) (used for chained routes)."""
        return ScoreMap(a=outer.a * self.a, b=outer.a * self.b + outer.b, r2=min(self.r2, outer.r2), pairs=0,
                        calibrated=self.calibrated or outer.calibrated, kind="composed")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


IDENTITY = ScoreMap()


def scores(queries: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    """Similarities as the index reports them: cosine, inner product, or -squared L2."""
    if metric == "cosine":
        return normalize(queries) @ normalize(gallery).T
    if metric == "ip":
        return queries @ gallery.T
    sq = (queries**2).sum(1)[:, None] + (gallery**2).sum(1)[None, :] - 2 * queries @ gallery.T
    return -sq


def _fit_line(
    kind: str,
    routed_queries: np.ndarray,
    stored: np.ndarray,
    native_queries: np.ndarray,
    native_stored: np.ndarray,
    metric_routed: str,
    metric_native: str,
    top_share: float,
    min_pairs: int,
    chunk: int,
) -> ScoreMap:
    """Least-squares line native ~ a * routed + b over each held-out query's top routed scores:
    paired with the same items' native scores ("regression"), or both sides sorted, against the
    query's own top native scores ("distribution")."""
    n = len(stored)
    if n < min_pairs:
        return ScoreMap()
    top = max(2, min(n, round(n * top_share)))
    xs, ys = [], []
    for start in range(0, len(routed_queries), chunk):
        s_r = scores(routed_queries[start : start + chunk], stored, metric_routed)
        s_n = scores(native_queries[start : start + chunk], native_stored, metric_native)
        if kind == "regression":
            idx = np.argpartition(-s_r, top - 1, axis=1)[:, :top]
            xs.append(np.take_along_axis(s_r, idx, axis=1).ravel())
            ys.append(np.take_along_axis(s_n, idx, axis=1).ravel())
        else:
            xs.append(np.sort(-np.partition(-s_r, top - 1, axis=1)[:, :top], axis=1).ravel())
            ys.append(np.sort(-np.partition(-s_n, top - 1, axis=1)[:, :top], axis=1).ravel())
    x, y = np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.float64)
    if np.ptp(x) < 1e-9:
        return ScoreMap(pairs=len(x))
    a, b = np.polyfit(x, y, 1)
    if a <= 0:  # a decreasing map would invert the route's own ranking; keep raw scores instead
        return ScoreMap(r2=0.0, pairs=len(x))
    r2 = 1.0 - float((y - (a * x + b)).var() / max(y.var(), 1e-12))
    return ScoreMap(a=float(a), b=float(b), r2=r2, pairs=len(x), calibrated=True, kind=kind)


def fit_score_map(
    routed_queries: np.ndarray, stored: np.ndarray, native_queries: np.ndarray, native_stored: np.ndarray,
    metric_routed: str, metric_native: str, top_share: float = 0.05, min_pairs: int = 200,
    chunk: int = DEFAULT_CHUNK,
) -> ScoreMap:
    """Regression map from routed scores (routed_queries vs stored) to native ones (native_queries
    vs native_stored); row i of every array is the same held-out item."""
    return _fit_line("regression", routed_queries, stored, native_queries, native_stored, metric_routed,
                     metric_native, top_share, min_pairs, chunk)


def fit_distribution_map(
    routed_queries: np.ndarray, stored: np.ndarray, native_queries: np.ndarray, native_stored: np.ndarray,
    metric_routed: str, metric_native: str, top_share: float = 0.05, min_pairs: int = 200,
    chunk: int = DEFAULT_CHUNK,
) -> ScoreMap:
    """Map each query's sorted top routed scores onto its sorted top native scores."""
    return _fit_line("distribution", routed_queries, stored, native_queries, native_stored, metric_routed,
                     metric_native, top_share, min_pairs, chunk)


def select_score_map(
    candidates: list[ScoreMap],
    routed: np.ndarray,
    native: np.ndarray,
    relevant: np.ndarray,
    seeds: tuple[int, ...] = (0, 1),
) -> tuple[ScoreMap, dict[str, float]]:
    """The candidate whose merge of a half-migrated held-out gallery retrieves best (mAP@R).

    `routed[i, j]`: held-out query i against item j's *other* representation through the route;
    `native[i, j]`: the same pair with both sides in the query's model; `relevant[i, j]`: relevance.
    The identity is always a candidate. Ties keep the earlier candidate.
    """
    from adapters.metrics import map_at_r_from_scores

    pool = [*candidates, IDENTITY]
    results: dict[str, float] = {}
    best, best_score = IDENTITY, -np.inf
    for cand in pool:
        if cand.kind in results:
            continue
        total = 0.0
        for seed in seeds:
            moved = np.random.default_rng(seed).random(native.shape[1]) < 0.5
            merged = np.where(moved[None, :], native, cand(routed))
            total += map_at_r_from_scores(merged, relevant)
        results[cand.kind] = total / len(seeds)
        if results[cand.kind] > best_score + 1e-12:
            best, best_score = cand, results[cand.kind]
    return best, results
