"""`auto`: fit the applicable methods, score each out-of-fold on the training pairs, keep the best
one the evidence supports -- and the best closed-form baseline whenever it does not.

Selection never looks at the caller's test set. The training pairs are cut into k folds (3 by
default); each candidate is fitted on all pairs but one fold and maps that fold's new vectors, so
every scored query comes from a map that never saw its pair. Folds are scored until at least
`min_eval_items` pairs are covered (on ~2k pairs: all of them; on 100k: one fold), and at most
`max_eval_items` of them are evaluated (a random sample).

Which candidates are fitted at all (the cost of auto is the trained methods' fits):
- a method that needs labels (oca) is not offered without them;
- neighbour_memory is offered only from its `auto_min_pairs` (10,000) fitting pairs: a memory of
  fewer pairs holds few neighbourhoods, and it was chosen and measured on 16k-20k;
- a trained method is offered only when the fitting folds hold `auto_min_pairs` pairs (5,000;
  `trained_min_pairs` overrides it for every trained method): on
  ~1.4k fitting pairs every trained method stayed at its closed-form start or lost on held-out
  pairs, on WordNet and on Debian (docs/adapters.md), while costing most of the time;
- screening: on the first scored fold a trained candidate that does not beat the best closed-form
  candidate's score on that fold is dropped (`not_ranked` says why, "stayed at start" when no
  training step improved on its initialisation) and costs no further fits. Trained candidates
  also train at most `trained_max_steps` steps here.

Scoring (as evaluate.py does on a test set, leave-one-out over the scored pool):
- with labels, half the classes (drawn at random) are *unseen*: each lies wholly inside one fold,
  so its items are mapped by a model that never saw the category. The ECC verdict and `new/old`
  are measured on the whole pool; candidates are ranked by the worse of their two gains over the
  best closed-form baseline (mAP@R on the unseen part and on the seen part, each divided by the
  better of Procrustes and ridge there; `rank_by="worse_gain"`). The draw of unseen classes is
  repeated (`repeats`, 3) and the scores averaged;
- without labels, folds are random; the ECC verdict uses consensus neighbours and candidates are
  ranked by pseudo-labels: spherical k-means clusters of the pool's joint embeddings [old, new].

The choice, and why it can be a baseline. A candidate other than the closed-form baselines is
*supported* when, item by item against the best baseline (the baseline ranked first), its
out-of-fold top-1 and AP@R differences have a lower confidence bound (mean - `safety_z` x standard
error, items averaged over draws) above -`tolerance` on both metrics: it may not be shown to lose
more than .005 on either. The winner is the best-ranked candidate that is supported and passes the
ECC; a baseline is always supported. Where the evidence for a richer map is weak (few pairs, small
margins, a top-1 traded for mAP@R), the baseline is chosen. Then the winner is refitted on all pairs,
with the parameters it was scored with.

The hedge. Below `hedge_max_pairs` (5,000) fitting pairs, where only the closed forms are offered,
a closed-form pick (procrustes, affine, adjoint) is served as `hedge` -- the adjoint's and
Procrustes' queries blended at a fixed share -- unless the pick passes the ECC out-of-fold and the
hedge does not. Why: which closed form carries over depends on whether the gallery's categories are
among the training pairs' (the adjoint trades top-1 on new categories for mAP@R, Procrustes and
ridge swap places between known and new ones), and the out-of-fold evidence cannot show it. On the
three development sets (120 runs of ~2k pairs, bench.hedge_replay) the hedge alone ended more than
.005 below the better baseline in 5 runs against 9 (of 112) for the choice, with more gain. Its
out-of-fold row is the blend of its parts' rows (no extra fit) and is shown beside the others;
`hedged_from` names the pick. The pick is kept (`hedge_declined` says why) when out-of-fold
Procrustes scores below `hedge_min_procrustes_ratio` (0.8) of the adjoint: the blend's weaker half
then drags the adjoint down -- on minilm -> e5 the hedge failed the ECC on held-out pairs where the
adjoint passed. 0.8 was chosen on the development sets (bench.hedge_guard: ECC misses 9 -> 3 of 100
runs, losses unchanged); a guard on the hedge's own out-of-fold ECC margin did not help there.
Not with `rank_by` "seen"/"unseen" (the caller knows the categories)
or `hedge_closed_forms=False`; not from ~16k pairs, where the hedge lost top-1 to ridge on
mpnet -> minilm on both development splits of bench.label_free.

Methods that need the query in both models (slerp) are never candidates.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adapters.base import Adapter, FitReport, ProgressFn, is_share
from adapters.evaluate import PRIMARY, EvalSet, baseline_rows, cross_row, queries_row
from adapters.methods.hedge import hedged
from adapters.metrics import cluster_labels, map_at_r, per_query_quality
from adapters.registry import METHODS, baselines, candidates, create, create_stored, register_method
from adapters.vectors import normalize


def selection_folds(n: int, labels: np.ndarray | None, folds: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(k disjoint held-out index sets covering 0..n-1, mask of items whose class is held out whole).

    With labels (and at least 4 classes) half the classes are unseen -- dealt whole to the folds,
    round-robin -- and every other class's items are dealt across all folds (stratified).
    Without labels the folds are a random partition and nothing is marked unseen.
    """
    rng = np.random.default_rng(seed)
    unseen = np.zeros(n, dtype=bool)
    if labels is None:
        return [np.sort(p) for p in np.array_split(rng.permutation(n), folds)], unseen
    classes, codes = np.unique(labels, return_inverse=True)
    order = rng.permutation(len(classes))
    n_unseen = len(classes) // 2 if len(classes) >= 4 else 0
    fold_of = np.empty(n, dtype=np.int64)
    for rank, c in enumerate(order[:n_unseen]):
        members = np.flatnonzero(codes == c)
        fold_of[members] = rank % folds
        unseen[members] = True
    offset = 0
    for c in order[n_unseen:]:
        members = rng.permutation(np.flatnonzero(codes == c))
        fold_of[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)  # keeps fold sizes balanced across small classes
    return [np.flatnonzero(fold_of == f) for f in range(folds)], unseen


@dataclass
class NotRanked:
    """A candidate auto did not rank, and why (shown to the operator beside the ranked ones)."""

    reason: str  # needs_labels | needs_pairs | stayed_at_start | screened_out
    note: str
    fit_seconds: float = 0.0


@dataclass
class OutOfFold:
    """Every ranked candidate's mapped queries for the scored pool of training pairs."""

    pool: np.ndarray  # indices into the training pairs, sorted
    unseen: np.ndarray  # bool per pool item: its class was held out whole
    queries: dict[str, np.ndarray]  # candidate -> (len(pool), d_old), pool order
    fit_seconds: dict[str, float]  # candidate -> summed over the folds fitted


@dataclass
class Screen:
    """The first-fold screen of trained candidates (run once, on the first draw)."""

    labels: np.ndarray | None
    x_old: np.ndarray
    x_new: np.ndarray
    seed: int
    dropped: dict[str, NotRanked] = field(default_factory=dict)

    def apply(self, fold: np.ndarray, mapped: dict[str, np.ndarray], reports: dict[str, Any],
              seconds: dict[str, float]) -> None:
        """Drop trained candidates that do not beat the best closed form here. One that stayed at its
        start is said to have (its start is Procrustes for most: the same map under another name);
        bt2's start is its own architecture, which can beat Procrustes, so staying is no reason alone."""
        relevance = self.labels[fold] if self.labels is not None else cluster_labels(
            np.hstack([normalize(self.x_old[fold]), normalize(self.x_new[fold])]), seed=self.seed)
        score = {name: map_at_r(q, self.x_old[fold], relevance) for name, q in mapped.items()}
        closed = {n: s for n, s in score.items() if not METHODS[n].cls.trained}
        best = max(closed, key=closed.get)
        for name, report in reports.items():
            if not METHODS[name].cls.trained:
                continue
            if score[name] > closed[best]:
                continue
            if report.stayed_at_start:
                self.dropped[name] = NotRanked("stayed_at_start", "stayed at start on the first fold: no training "
                                               "step improved on its initialisation, which is not above "
                                               f"{best} there", seconds[name])
            else:
                self.dropped[name] = NotRanked(
                    "screened_out", f"first fold: mAP@R {score[name]:.4f}, not above {best}'s {closed[best]:.4f}",
                    seconds[name])


def out_of_fold(names: list[str], x_old: np.ndarray, x_new: np.ndarray, labels: np.ndarray | None,
                params: dict[str, Any], seed: int, progress: ProgressFn, screen: Screen | None) -> OutOfFold:
    """Fit each candidate once per scored fold (on the other folds) and map the fold's new vectors.
    With `screen`, after the first fold the trained candidates it drops are fitted no further."""
    parts, unseen = selection_folds(len(x_old), labels, int(params["folds"]), seed)
    scored: list[np.ndarray] = []
    for held in parts:
        scored.append(held)
        if sum(len(h) for h in scored) >= params["min_eval_items"]:
            break
    cap = int(params["max_eval_items"])
    if sum(len(h) for h in scored) > cap:  # evaluate a random sample, the same share of each fold
        rng = np.random.default_rng(seed + 1)
        per_fold = cap // len(scored)
        scored = [np.sort(rng.choice(h, size=min(len(h), per_fold), replace=False)) for h in scored]
    pool = np.concatenate(scored)
    order = np.argsort(pool)
    queries: dict[str, list[np.ndarray]] = {name: [] for name in names}
    seconds = dict.fromkeys(names, 0.0)
    active = list(names)
    for f, held in enumerate(scored):
        fit = np.setdiff1d(np.arange(len(x_old)), parts[f])
        reports = {}
        for i, name in enumerate(active):
            def sub(fraction: float, message: str, i: int = i, fold: int = f, width: int = len(active)) -> None:
                progress((fold + (i + fraction) / width) / len(scored), f"fold {fold + 1}/{len(scored)}: {message}")

            candidate = create(name, **method_params(name, params))
            candidate.fit(x_old[fit], x_new[fit], None if labels is None else labels[fit], seed=seed, progress=sub)
            seconds[name] += candidate.report.fit_seconds
            reports[name] = candidate.report
            queries[name].append(candidate.transform(x_new[held]))
        if f == 0 and screen is not None:
            screen.apply(held, {n: queries[n][0] for n in active}, reports, seconds)
            active = [n for n in active if n not in screen.dropped]
    return OutOfFold(pool=pool[order], unseen=unseen[pool][order],
                     queries={name: np.concatenate(queries[name])[order] for name in active},
                     fit_seconds={name: seconds[name] for name in active})


def method_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """A candidate's parameters inside auto: the caller's, over auto's step cap for trained methods;
    the hedge's parts get the parameters they were scored with."""
    own = dict(params["method_params"].get(name, {}))
    if name == "hedge":
        own.setdefault("adjoint_params", method_params("adjoint", params))
        own.setdefault("procrustes_params", method_params("procrustes", params))
    if METHODS[name].cls.trained and "max_steps" in METHODS[name].defaults:
        own.setdefault("max_steps", int(params["trained_max_steps"]))
    return own


RANK_BY = ("worse_gain", "worse_part", "unseen", "seen", "pool")
PARTS = ("unseen", "seen")


@dataclass
class PoolScores:
    """One scored pool: per-candidate rows (new/old with ECC verdict), per-part mAP@R, baseline rows,
    and each candidate's per-item (top-1, AP@R) under the ranking relevance."""

    results: dict[str, dict[str, Any]]
    parts: dict[str, dict[str, float]]  # part -> candidate -> mAP@R (parts too small to rank by are absent)
    rows: dict[str, dict[str, float]]
    relevance: str
    per_item: dict[str, np.ndarray] = field(default_factory=dict)  # candidate -> (n_train, 2), NaN off-pool


def score_pool(oof: OutOfFold, x_old: np.ndarray, x_new: np.ndarray, labels: np.ndarray | None,
               seed: int) -> PoolScores:
    """Score every candidate's out-of-fold queries: the ECC verdict on the whole pool; with labels
    mAP@R on the unseen and the seen part; without, mAP@R against joint-cluster pseudo-labels (the
    single "selection" part)."""
    pool_labels = None if labels is None else labels[oof.pool]
    test = EvalSet(x_old[oof.pool], x_new[oof.pool], pool_labels)
    rows = baseline_rows(test)
    results = {name: {**queries_row(q, test, rows), "fit_seconds": oof.fit_seconds[name]}
               for name, q in oof.queries.items()}
    relevance = pool_labels
    if labels is None:
        relevance = cluster_labels(np.hstack([normalize(test.old), normalize(test.new)]), seed=seed)
    per_item = {}
    for name, q in oof.queries.items():
        per_item[name] = np.full((len(x_old), 2), np.nan)
        per_item[name][oof.pool] = per_query_quality(q, test.old, relevance)
    parts: dict[str, dict[str, float]] = {}
    if labels is None:  # the pool's mAP@R against the pseudo-labels: the mean of the per-item AP@R
        parts["selection"] = {name: float(np.nanmean(v[oof.pool, 1])) for name, v in per_item.items()}
    else:
        for part, mask in zip(PARTS, (oof.unseen, ~oof.unseen), strict=True):
            if mask.sum() < 10 or len(np.unique(pool_labels[mask])) < 2:
                continue  # too small to rank by (e.g. fewer than 4 classes: nothing is unseen)
            parts[part] = {name: map_at_r(q[mask], test.old[mask], pool_labels[mask])
                           for name, q in oof.queries.items()}
    return PoolScores(results, parts, rows, test.relevance, per_item)


def average_pools(pools: list[PoolScores]) -> PoolScores:
    """Repeats (different unseen-class draws) merged: every score is the mean over repeats, and the
    ECC verdict and gap closed are taken again on the means; fit seconds add up; per-item quality
    is averaged over the draws that scored the item."""
    if len(pools) == 1:
        return pools[0]

    def mean_metrics(dicts: list[dict[str, float]]) -> dict[str, float]:
        return {k: float(np.mean([d[k] for d in dicts])) for k in dicts[0]}

    rows = {key: mean_metrics([p.rows[key] for p in pools]) for key in pools[0].rows}
    results = {name: {**cross_row(mean_metrics([p.results[name]["new/old"] for p in pools]), rows),
                      "fit_seconds": sum(p.results[name]["fit_seconds"] for p in pools)}
               for name in pools[0].results}
    shared = set.intersection(*(set(p.parts) for p in pools))
    parts = {part: mean_metrics([p.parts[part] for p in pools]) for part in shared}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": items no draw scored stay NaN
        per_item = {name: np.nanmean(np.stack([p.per_item[name] for p in pools]), axis=0) for name in results
                    if all(name in p.per_item for p in pools)}
    return PoolScores(results, parts, rows, pools[0].relevance, per_item)


def rank_candidates(scores: PoolScores, rank_by: str) -> dict[str, float]:
    """The ranking score per candidate (higher is better).

    Without labels: mAP@R against the joint-cluster pseudo-labels. With labels, `rank_by`:
    - "worse_gain" (default): the worse of the two parts' gains over the best closed-form baseline
      on that part (score / max(procrustes, affine)). The reference is fixed: one candidate's
      exceptional score on one part does not rescale everybody else's;
    - "worse_part": the same with the best candidate on each part as the reference;
    - "unseen" / "seen": mAP@R on that part alone, for callers who know their gallery's
      categories are new, or fixed; "pool": mAP@R on the whole scored pool.
    A part too small to rank by is skipped; with no part left the pool score ranks.
    """
    pool_score = {name: r["new/old"][PRIMARY] for name, r in scores.results.items()}
    if "selection" in scores.parts:
        return dict(scores.parts["selection"])
    if rank_by in PARTS:
        return dict(scores.parts.get(rank_by, pool_score))
    if rank_by == "pool" or not scores.parts:
        return pool_score
    relative: dict[str, list[float]] = {name: [] for name in scores.results}
    for part_scores in scores.parts.values():
        base = [part_scores[b] for b in baselines() if b in part_scores]
        reference = max(base) if rank_by == "worse_gain" and base else max(part_scores.values())
        for name, value in part_scores.items():
            relative[name].append(value / reference if reference > 0 else 0.0)
    return {name: min(rel) for name, rel in relative.items()}


def support(scores: PoolScores, ranking: dict[str, float], z: float,
            tolerance: float) -> tuple[str, dict[str, dict]]:
    """(the reference baseline, per candidate: item-paired top-1 / AP@R differences against it and
    whether they support choosing the candidate -- lower bound mean - z*SE >= -tolerance on both)."""
    present = [b for b in baselines() if b in scores.results]
    reference = max(present, key=ranking.get)
    out: dict[str, dict] = {}
    for name in scores.results:
        if name in present:
            out[name] = {"supported": True, "versus": reference}
            continue
        diff = scores.per_item[name] - scores.per_item[reference]
        diff = diff[~np.isnan(diff).any(axis=1)]
        entry: dict[str, Any] = {"versus": reference, "items": len(diff)}
        ok = len(diff) >= 2
        for column, metric in enumerate(("top1", "AP@R")):
            mean = float(diff[:, column].mean()) if len(diff) else 0.0
            se = float(diff[:, column].std(ddof=1) / np.sqrt(len(diff))) if len(diff) >= 2 else float("inf")
            entry[metric] = {"mean_difference": mean, "lower_bound": mean - z * se}
            ok = ok and mean - z * se >= -tolerance
        entry["supported"] = ok
        out[name] = entry
    return reference, out


def choose_supported(results: dict[str, dict[str, Any]], ranking: dict[str, float],
                     supported: dict[str, dict]) -> str:
    """Best-ranked among: supported and passing the ECC; else passing; else supported. Ties go to
    the candidate listed first, so the choice never depends on set iteration order."""
    ok = [n for n in results if supported[n]["supported"]]
    passing = [n for n in results if results[n]["ecc"]]
    for group in ([n for n in ok if n in passing], passing, ok):
        if group:
            return max(group, key=ranking.get)
    return max(results, key=ranking.get)


HEDGED_PICKS = ("procrustes", "affine", "adjoint")  # the closed forms whose pick auto serves as the hedge


def add_hedge(oof: OutOfFold, adjoint_share: float) -> None:
    """The hedge's out-of-fold queries, from its two parts' (no extra fit: both are deterministic)."""
    if "adjoint" in oof.queries and "procrustes" in oof.queries:
        oof.queries["hedge"] = hedged(oof.queries["adjoint"], oof.queries["procrustes"], adjoint_share)
        oof.fit_seconds["hedge"] = oof.fit_seconds["adjoint"] + oof.fit_seconds["procrustes"]


def ecc_margin(row: dict[str, Any], old_old: float) -> float:
    """How far a candidate's out-of-fold new/old clears old/old, as a share of old/old (ECC metric)."""
    return (row["new/old"][PRIMARY] - old_old) / old_old if old_old > 0 else float("inf")


def procrustes_ratio(results: dict[str, dict[str, Any]]) -> float:
    """Procrustes' out-of-fold score over the adjoint's: how far the hedge's weaker half lies below."""
    adjoint = results["adjoint"]["new/old"][PRIMARY]
    return results["procrustes"]["new/old"][PRIMARY] / adjoint if adjoint > 0 else float("inf")


def hedge_applies(pick: str, results: dict[str, dict[str, Any]]) -> bool:
    """Whether the hedge is an option for this pick at all: a closed form, with the hedge scored."""
    return pick in HEDGED_PICKS and "hedge" in results


def hedge_pick(pick: str, results: dict[str, dict[str, Any]], min_procrustes_ratio: float = 0.0) -> str:
    """A closed-form pick is served as the hedge -- unless Procrustes scores below `min_procrustes_ratio`
    of the adjoint out-of-fold (the blend would drag the adjoint down: on pairs like minilm -> e5 the
    hedge failed the ECC on held-out pairs where the adjoint passed), or the pick passes the ECC
    out-of-fold and the hedge does not. Trained and memory picks stay: they won on evidence the
    hedge does not replace."""
    if not hedge_applies(pick, results):
        return pick
    if procrustes_ratio(results) < min_procrustes_ratio:
        return pick
    return "hedge" if results["hedge"]["ecc"] or not results[pick]["ecc"] else pick


def hedge_declined(pick: str, results: dict[str, dict[str, Any]], old_old: float, min_ratio: float) -> dict:
    """Why a closed-form pick is served as itself although the hedge was scored (for the operator)."""
    ratio = procrustes_ratio(results)
    pick_margin, hedge_margin = ecc_margin(results[pick], old_old), ecc_margin(results["hedge"], old_old)
    if ratio < min_ratio:
        reason, note = "procrustes_far_below", (
            f"out-of-fold Procrustes scored {ratio:.0%} of the adjoint's mAP@R (the hedge needs {min_ratio:.0%}), "
            "so blending them would drag the adjoint down")
    else:
        reason, note = "ecc", (f"out-of-fold {pick} passes the ECC ({pick_margin:+.1%} over old/old's mAP@R) "
                               f"and the hedge does not ({hedge_margin:+.1%})")
    return {"reason": reason, "note": note, "procrustes_ratio": ratio, "min_procrustes_ratio": min_ratio,
            "pick_margin": pick_margin, "hedge_margin": hedge_margin}


@register_method()
class Auto(Adapter):
    name = "auto"
    uses_labels = True

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.params["rank_by"] not in RANK_BY:  # at creation, so a bad request fails before any work
            raise ValueError(f"auto: rank_by must be one of {', '.join(RANK_BY)}, got {self.params['rank_by']!r}")
        ratio = self.params["hedge_min_procrustes_ratio"]
        if not is_share(ratio):
            raise ValueError(f"auto: hedge_min_procrustes_ratio must be a number from 0 to 1 (Procrustes' "
                             f"out-of-fold mAP@R over the adjoint's), got {ratio!r}")

    @classmethod
    def default_params(cls) -> dict:
        return {"methods": candidates(), "folds": 3, "min_eval_items": 2_000, "max_eval_items": 5_000,
                "repeats": 3, "rank_by": "worse_gain", "method_params": {}, "screen": True,
                "trained_max_steps": 600, "trained_min_pairs": None, "safety_z": 1.0, "tolerance": 0.005,
                "hedge_closed_forms": True, "hedge_max_pairs": 5_000, "hedge_min_procrustes_ratio": 0.8}

    def _fitting_pairs(self, n_pairs: int) -> int:
        """How many pairs each out-of-fold fit sees (all but one fold): what the size gates compare."""
        return n_pairs - n_pairs // int(self.params["folds"])

    def _offered(self, n_pairs: int, labels: np.ndarray | None) -> tuple[list[str], dict[str, NotRanked]]:
        """The candidates worth fitting here, and why the others are not."""
        offered, skipped = [], {}
        fitting = self._fitting_pairs(n_pairs)
        for name in self.params["methods"]:
            if name not in METHODS or name == "auto" or not METHODS[name].servable:
                continue
            cls = METHODS[name].cls
            min_pairs = cls.auto_min_pairs
            if cls.trained and self.params["trained_min_pairs"] is not None:
                min_pairs = int(self.params["trained_min_pairs"])
            if cls.needs_labels and labels is None:
                skipped[name] = NotRanked("needs_labels", f"needs labels: {cls.label_requirement}")
            elif min_pairs > fitting:
                skipped[name] = NotRanked("needs_pairs", f"offered from {min_pairs:,} fitting pairs "
                                          f"({fitting:,} here); fit it directly to try it")
            else:
                offered.append(name)
        return offered, skipped

    def _fit(self, x_old, x_new, labels, seed, progress: ProgressFn) -> FitReport:
        names, not_ranked = self._offered(len(x_old), labels)
        # with labels the fold draw decides which classes are unseen, and with few classes that draw
        # dominates the unseen part's score: repeat it and average (without labels, one draw)
        repeats = 1
        if labels is not None and len(np.unique(labels)) >= 4:  # fewer classes: nothing is held out whole
            repeats = max(1, int(self.params["repeats"]))
        screen = Screen(labels, x_old, x_new, seed) if self.params["screen"] else None
        # the hedge is for not knowing the gallery's categories (a caller ranking by one part knows them),
        # measured on ~2k pairs; from ~16k pairs ridge and the adjoint carried over on their own (docs/adapters.md)
        hedging = (bool(self.params["hedge_closed_forms"])
                   and self._fitting_pairs(len(x_old)) < int(self.params["hedge_max_pairs"])
                   and (labels is None or self.params["rank_by"] == "worse_gain"))
        pools = []
        for r in range(repeats):
            def sub(f: float, m: str, r: int = r) -> None:
                progress(0.75 * (r + f) / repeats, f"auto: draw {r + 1}/{repeats}: {m}")

            active = [n for n in names if screen is None or n not in screen.dropped]
            oof = out_of_fold(active, x_old, x_new, labels, self.params, seed + r, sub, screen if r == 0 else None)
            if hedging:
                add_hedge(oof, {**METHODS["hedge"].defaults, **method_params("hedge", self.params)}["adjoint_share"])
            pools.append(score_pool(oof, x_old, x_new, labels, seed + r))
        if screen is not None:
            not_ranked.update(screen.dropped)
        kept = set.intersection(*(set(p.results) for p in pools))
        for p in pools:
            p.results = {n: v for n, v in p.results.items() if n in kept}
            p.parts = {part: {n: v for n, v in sc.items() if n in kept} for part, sc in p.parts.items()}
            p.per_item = {n: v for n, v in p.per_item.items() if n in kept}
        scores = average_pools(pools)
        results, ranking = scores.results, rank_candidates(scores, self.params["rank_by"])
        reference, supported = support(scores, ranking, float(self.params["safety_z"]), float(self.params["tolerance"]))
        for part, part_scores in scores.parts.items():
            for name, value in part_scores.items():
                results[name][f"{part}_mAP@R"] = value
        for name, score in ranking.items():
            results[name]["rank_score"] = score
            results[name]["support"] = supported[name]
        picked = choose_supported(results, ranking, supported)
        min_ratio = float(self.params["hedge_min_procrustes_ratio"])
        chosen = hedge_pick(picked, results, min_ratio) if hedging else picked
        declined = None
        if hedging and chosen == picked and hedge_applies(picked, results):
            declined = hedge_declined(picked, results, scores.rows["old/old"][PRIMARY], min_ratio)
        best_ranked = max(results, key=ranking.get)
        progress(0.75, f"auto: refitting {chosen} on all pairs")
        self.chosen = create(chosen, **method_params(chosen, self.params))  # as it was scored
        inner = self.chosen.fit(x_old, x_new, labels, seed=seed, progress=lambda f, m: progress(0.75 + 0.25 * f, m))
        not_ranked_out = {name: vars(nr) for name, nr in not_ranked.items()}
        return FitReport(
            method=self.name,
            steps=inner.steps,
            curve=inner.curve,
            notes={"selected": chosen, "selected_passes_ecc": bool(results[chosen]["ecc"]),
                   "best_ranked": best_ranked, "reference_baseline": reference,
                   "baseline_for_weak_evidence": picked != best_ranked and picked in baselines(),
                   "hedged_from": picked if chosen != picked else None, "hedge_declined": declined,
                   "holdout_rows": scores.rows, "candidates": results, "holdout_size": len(oof.pool),
                   "holdout_unseen": int(oof.unseen.sum()), "selection_repeats": repeats,
                   "not_ranked": not_ranked_out,
                   "stayed_at_start": {n: v for n, v in not_ranked_out.items() if v["reason"] == "stayed_at_start"},
                   "rank_by": self.params["rank_by"] if labels is not None else "clusters",
                   "holdout_relevance": scores.relevance, "selected_report": inner.as_dict()},
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

    def restore_config(self, config: dict) -> None:
        inner = config["selected"]
        self.chosen = create_stored(inner["method"], inner["params"])
        self.chosen.d_old, self.chosen.d_new = inner["d_old"], inner["d_new"]

    def tensors(self) -> dict[str, np.ndarray]:
        return self.chosen.tensors()

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        self.chosen.load_tensors(tensors)
