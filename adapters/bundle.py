"""Everything a server needs from one trained upgrade, built, evaluated and saved together.

An `UpgradeBundle` holds, for old model A -> new model B:
- `to_old`: the compatibility transformation (B queries -> A space), any method of the registry;
- an A -> B map for *old-model* queries against items already re-embedded into B: the method's own
  `forward` map where it has one, else a centred orthogonal Procrustes fitted in the reverse
  direction; the better on the held-out pairs is kept, and its reported old/new row is
  cross-fitted (chosen on one half of the held-out pairs, measured on the other, both ways);
- score maps putting routed scores on the query model's scale (calibration.py), both directions,
  fitted on one half of the held-out pairs and chosen on the other -- they enter no reported row
  (they only merge items that have no vector in the partition a query ranks by,
  service/core/merge.py);
- a reliability model predicting how far each item's old vector lands from its new one
  (reliability.py; reported per suggested item -- the backfill order itself is by routed hits,
  backfill_order.py);
- the migration curve: quality of new- and old-model queries as a gallery of held-out items is
  re-embedded in a random and in the suggested order, under the service's merge (migration.py);
- the evaluation on held-out pairs: old/old, new/new, new/old raw, new/old through the
  transformation, old/new through the reverse map, ECC, gap closed.
The transformation and the reverse maps are never trained on the held-out pairs, and no reported
row is measured on pairs that chose it: the evaluation describes the maps that are saved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from adapters.backfill_order import routed_hub_order
from adapters.base import Adapter, ProgressFn
from adapters.calibration import ScoreMap, fit_distribution_map, fit_score_map, select_score_map
from adapters.calibration import scores as calibration_scores
from adapters.evaluate import PRIMARY, EvalSet, baseline_rows, method_row
from adapters.metrics import gap_closed
from adapters.migration import clearly_better, migration_curve, quality_ratios
from adapters.registry import create, load
from adapters.reliability import ReliabilityModel, fit_reliability, item_errors, spearman
from adapters.vectors import check_pairs

HOLDOUT_FRACTION = 0.2  # share of the pairs held out of every fit (at most `max_holdout`)
META_FILE = "bundle.json"
RELIABILITY_FILE = "reliability.safetensors"


@dataclass
class UpgradeBundle:
    to_old: Adapter
    reverse: Adapter | None  # None: to_old.forward is the A -> B map
    new_old_scores: ScoreMap
    old_new_scores: ScoreMap
    reliability: ReliabilityModel
    evaluation: dict[str, Any] = field(default_factory=dict)

    def new_to_old(self, x_new: np.ndarray) -> np.ndarray:
        return self.to_old.transform(x_new)

    def old_to_new(self, x_old: np.ndarray) -> np.ndarray:
        if self.reverse is None:
            return self.to_old.forward(x_old)
        return self.reverse.transform(x_old)

    @property
    def passes_ecc(self) -> bool:
        return bool(self.evaluation.get("ecc"))

    def quality(self, direction: str) -> float:
        """Share of the query model's own retrieval quality kept through this map (for routing)."""
        return self.ratios(direction)[PRIMARY]

    def ratios(self, direction: str) -> dict[str, float]:
        """`quality` per metric (top-1 and mAP@R)."""
        return quality_ratios(self.evaluation["rows"], direction)

    @property
    def holdout_pairs(self) -> int:
        return int(self.evaluation.get("pairs", {}).get("holdout", 0))

    # ---- persistence --------------------------------------------------------------------------
    def save(self, directory: Path | str) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.to_old.save(directory / "to_old")
        if self.reverse is not None:
            self.reverse.save(directory / "reverse")
        save_file({"weight": self.reliability.weight, "bias": np.array([self.reliability.bias], np.float32)},
                  directory / RELIABILITY_FILE)
        meta = {"new_old_scores": self.new_old_scores.as_dict(), "old_new_scores": self.old_new_scores.as_dict(),
                "evaluation": self.evaluation}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, default=float))
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> UpgradeBundle:
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        rel = load_file(directory / RELIABILITY_FILE)
        reverse_dir = directory / "reverse"
        return cls(
            to_old=load(directory / "to_old"),
            reverse=load(reverse_dir) if reverse_dir.exists() else None,
            new_old_scores=ScoreMap(**meta["new_old_scores"]),
            old_new_scores=ScoreMap(**meta["old_new_scores"]),
            reliability=ReliabilityModel(rel["weight"], float(rel["bias"][0])),
            evaluation=meta["evaluation"],
        )


def json_safe(value: Any) -> Any:
    """Plain JSON: numpy scalars to Python, NaN/inf to None (PostgreSQL's JSON rejects NaN)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _stayed_at_start(report) -> bool:
    """Whether the saved map is its method's initialisation (auto: the chosen candidate's refit)."""
    if report is None:
        return False
    inner = report.notes.get("selected_report")
    return bool(inner["stayed_at_start"] if inner else report.stayed_at_start)


def cross_fitted_choice(mapped: dict[str, np.ndarray], test: EvalSet, seed: int) -> dict[str, float]:
    """An honest old/new row for a map *chosen* on the held-out pairs: split them in two, choose
    on one half, measure the choice on the other, both ways round, and average. (Choosing and
    reporting on the same pairs reports the lucky candidate's luck.)"""
    halves = np.array_split(np.random.default_rng(seed + 2).permutation(len(test.old)), 2)
    parts = [EvalSet(test.old[h], test.new[h], None if test.labels is None else test.labels[h]) for h in halves]
    scores = [{name: part.metrics(m[h], part.new).as_dict() for name, m in mapped.items()}
              for part, h in zip(parts, halves, strict=True)]
    rows = []
    for chooser, judge in ((0, 1), (1, 0)):
        chosen = max(scores[chooser], key=lambda name: scores[chooser][name][PRIMARY])
        rows.append(scores[judge][chosen])
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


def _relevance(test: EvalSet) -> np.ndarray:
    """(n, n) relevance of held-out items to each other: same label, else consensus neighbours."""
    n = len(test.old)
    if test.labels is not None:
        return test.labels[:, None] == test.labels[None, :]
    relevant = np.zeros((n, n), dtype=bool)
    rows, cols = np.nonzero(test.neighbours >= 0)
    relevant[rows, test.neighbours[rows, cols]] = True
    return relevant


def _calibrate(routed_queries: np.ndarray, stored: np.ndarray, native_queries: np.ndarray,
               native_stored: np.ndarray, metric_routed: str, metric_native: str,
               relevant: np.ndarray, seed: int) -> tuple[ScoreMap, dict[str, float]]:
    """Fit both calibration candidates on one half of the held-out pairs and keep the one that
    merges a mixed gallery of the *other* half best (so no map is chosen on the pairs it was fitted
    on); with fewer than 2 x 200 held-out pairs nothing is fitted (calibration.py)."""
    fit_half, choose_half = (np.sort(h) for h in np.array_split(
        np.random.default_rng(seed + 3).permutation(len(stored)), 2))
    args = (routed_queries[fit_half], stored[fit_half], native_queries[fit_half], native_stored[fit_half],
            metric_routed, metric_native)
    candidates = [m for m in (fit_score_map(*args), fit_distribution_map(*args)) if m.calibrated]
    if not candidates:
        return ScoreMap(), {}
    c = choose_half
    routed = calibration_scores(routed_queries[c], stored[c], metric_routed)
    native = calibration_scores(native_queries[c], native_stored[c], metric_native)
    return select_score_map(candidates, routed, native, relevant[np.ix_(c, c)])


CURVE_ITEMS = 1_500  # held-out items the migration curve replays (an n x n merge per level)


def _migration_curves(bundle: UpgradeBundle, rows: dict, test: EvalSet, relevant: np.ndarray, metric_old: str,
                      metric_new: str, seed: int) -> dict[str, Any]:
    """The migration curve on (a sample of) the held-out items, random and suggested order."""
    n = len(test.old)
    sample = np.sort(np.random.default_rng(seed).permutation(n)[:CURVE_ITEMS])
    old, new, rel = test.old[sample], test.new[sample], relevant[np.ix_(sample, sample)]
    orders = {"random": np.random.default_rng(seed + 1).permutation(len(sample)),
              "suggested": routed_hub_order(old, bundle.old_to_new, bundle.new_to_old, metric_old, seed=seed)}
    stay = clearly_better(quality_ratios(rows, "new->old"), n)
    return {"items": len(sample), "new_queries_stay_on_route": stay,
            **{name: migration_curve(bundle.new_to_old, old, new, rel, order, stay, metric_old, metric_new)
               for name, order in orders.items()}}


def split_holdout(n: int, fraction: float, max_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) row indices: a random `fraction` of the pairs, at most `max_holdout`."""
    rng = np.random.default_rng(seed)
    n_hold = min(max_holdout, max(2, int(round(n * fraction))))
    perm = rng.permutation(n)
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


def build_bundle(
    x_old: np.ndarray,
    x_new: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    method: str = "auto",
    params: dict[str, Any] | None = None,
    metric_old: str = "cosine",
    metric_new: str = "cosine",
    holdout_fraction: float = HOLDOUT_FRACTION,
    max_holdout: int = 5_000,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> UpgradeBundle:
    """Fit `method` on part of the pairs and measure everything on the rest (see module docstring)."""
    progress = progress or (lambda _f, _m: None)
    x_old, x_new, labels = check_pairs(x_old, x_new, labels)
    fit, hold = split_holdout(len(x_old), holdout_fraction, max_holdout, seed)
    lab = (lambda idx: None) if labels is None else (lambda idx: labels[idx])

    adapter = create(method, **(params or {}))
    if adapter.needs_old_query:
        raise ValueError(f"{method} needs every query embedded by both models; a server cannot use it")
    progress(0.0, f"fitting {method} on {len(fit)} pairs ({len(hold)} held out)")
    adapter.fit(x_old[fit], x_new[fit], lab(fit), seed=seed, progress=lambda f, m: progress(0.8 * f, m))

    progress(0.8, "evaluating on held-out pairs")
    test = EvalSet(x_old[hold], x_new[hold], lab(hold))
    rows = baseline_rows(test)
    result = method_row(adapter, test, rows)
    rows["new/old"] = result["new/old"]

    # Old-model queries against re-embedded items: the method's forward map or a reverse Procrustes.
    options: dict[str, Adapter | None] = {}
    if adapter.forward(x_old[hold[:1]]) is not None:
        options["forward"] = None
    reverse = create("procrustes")
    reverse.fit(x_new[fit], x_old[fit], seed=seed)  # roles swapped: maps old -> new
    options["procrustes"] = reverse
    mapped = {name: adapter.forward(test.old) if candidate is None else candidate.transform(test.old)
              for name, candidate in options.items()}
    measured = {name: test.metrics(m, test.new).as_dict() for name, m in mapped.items()}
    reverse_kind = max(measured, key=lambda name: measured[name][PRIMARY])
    rows["old/new"] = cross_fitted_choice(mapped, test, seed) if len(options) > 1 else measured[reverse_kind]
    bundle = UpgradeBundle(adapter, options[reverse_kind], ScoreMap(), ScoreMap(),
                           ReliabilityModel(np.zeros(x_old.shape[1], np.float32), 0.0))

    progress(0.9, "calibrating scores and fitting the backfill order")
    relevant = _relevance(test)
    selection: dict[str, dict[str, float]] = {}
    bundle.new_old_scores, selection["new->old"] = _calibrate(
        bundle.new_to_old(test.new), test.old, test.new, test.new, metric_old, metric_new, relevant, seed)
    bundle.old_new_scores, selection["old->new"] = _calibrate(
        bundle.old_to_new(test.old), test.new, test.old, test.old, metric_new, metric_old, relevant, seed)
    bundle.reliability = fit_reliability(x_old[fit], item_errors(bundle.old_to_new(x_old[fit]), x_new[fit]))
    held_errors = item_errors(bundle.old_to_new(test.old), test.new)
    rho = spearman(bundle.reliability.predict_error(test.old), held_errors)

    progress(0.95, "replaying a migration on held-out pairs")
    curve = _migration_curves(bundle, rows, test, relevant, metric_old, metric_new, seed)

    report = adapter.report
    notes = report.notes if report else {}
    old_old, new_new = rows["old/old"][PRIMARY], rows["new/new"][PRIMARY]
    bundle.evaluation = json_safe({
        "method": method,
        "selected": notes.get("selected", method),
        "hedged_from": notes.get("hedged_from"),  # auto's closed-form pick, served as the hedge
        "hedge_declined": notes.get("hedge_declined"),  # or why auto kept that pick rather than the hedge
        "relevance": test.relevance,
        "rows": rows,
        "ecc": bool(result["ecc"]),
        "ecc_top1": bool(result["ecc_top1"]),
        "gap_closed": float(result["gap_closed"]),
        "old_query_gap_closed": float(gap_closed(rows["old/new"][PRIMARY], new_new, old_old)),
        "reverse_map": reverse_kind,
        "reverse_candidates": measured,
        "fit_seconds": float(report.fit_seconds if report else 0.0),
        "stayed_at_start": _stayed_at_start(report),
        "candidates_stayed_at_start": notes.get("stayed_at_start", {}),
        "candidates_not_ranked": notes.get("not_ranked", {}),
        "curve": notes.get("selected_report", {}).get("curve") or (report.curve if report else []),
        "candidates": notes.get("candidates", {}),
        "calibration": {"new->old": bundle.new_old_scores.as_dict(), "old->new": bundle.old_new_scores.as_dict(),
                        "selection_mAP@R": selection},
        "backfill_order_spearman": rho,
        "migration_curve": curve,
        "pairs": {"fit": len(fit), "holdout": len(hold), "labels": labels is not None},
    })
    progress(1.0, "bundle ready")
    return bundle
