"""How a half-migrated gallery should be served: the candidate merges replayed offline, side by side.

    python -m bench.merge_replay                          # both domains, every bench.compat pair
    python -m bench.merge_replay --datasets wordnet-4k --pairs e5:mpnet --method procrustes

The numpy replay of what the service does for one upgrade A -> B while a share of the gallery is
re-embedded into B (0 / 33 / 67 / 100 %, random order and the service's suggested order). Setting
as bench.upgrade: every item of the set is in the gallery; the queries are the items of a
stratified test half (leave-one-out, relevance = same label); the transformation is fitted by
`build_bundle` on the other half only (with labels), so its calibration maps come from its own
nested hold-out inside that half -- the test half is never seen by a fit or a choice.

New-model (B) queries, each item served from its B vector once it has one (a B vector is always
the better representation for a B query), else from its A vector through the transformation:
- raw           merge by raw scores (routed cosines as they are);
- regression    routed scores through the regression calibration (calibration.py);
- distribution  routed scores through the distribution-matching calibration;
- chosen        the calibration the bundle selected on its nested hold-out (what the service used);
- percentile    rank-based fusion: an item's rank inside its own partition over that partition's
                size (an estimate of its quantile in the gallery), no scores compared at all;
- slots         the A partition still holds every item (old vectors kept until A is retired): rank
                all items by the routed score, then hand the positions held by re-embedded items
                to the re-embedded items in their native B order. At 0 % this is the routed
                ranking, at 100 % the native ranking, with no score scale compared in between.
Old-model (A) queries: `reverse` (the service before this change: re-embedded items leave A and
are reached through the reverse map, calibrated as chosen) vs `kept` (their A vectors stay
searchable until A is retired; every A query is served natively: old/old by construction) vs
`kept+slots` (kept A vectors rank every item; re-embedded items fill their slots in the order of
the reverse map into B: worth it where the reverse map beats old/old, as MiniLM -> mpnet does).

Writes bench/results/merge_replay.json and prints one table per dataset.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from adapters.backfill_order import routed_hub_order
from adapters.bundle import HOLDOUT_FRACTION, UpgradeBundle, build_bundle, split_holdout
from adapters.calibration import IDENTITY, fit_distribution_map, fit_score_map
from adapters.migration import percentile_merge, score_merge, slot_merge
from adapters.vectors import normalize
from bench.compat import load_wordnet, run_sweep, stratified_half, sweep_arguments, sweep_output_arguments

LEVELS = (0.0, 1 / 3, 2 / 3, 1.0)
NEW_MERGES = ("raw", "regression", "distribution", "chosen", "percentile", "slots")
OLD_MERGES = ("reverse", "kept", "kept+slots")
METRICS = ("top1", "mAP@R")


def quality(merged: np.ndarray, queries: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Leave-one-out top-1 and mAP@R of a (queries x gallery) matrix whose row order is a ranking."""
    merged = np.array(merged, dtype=np.float64)
    merged[np.arange(len(queries)), queries] = -np.inf
    order = np.argsort(-merged, axis=1, kind="stable")
    rel = labels[order] == labels[queries][:, None]
    rel[:, -1] = False  # the query itself, ranked last
    sizes = {c: int(n) for c, n in zip(*np.unique(labels, return_counts=True), strict=True)}
    total = 0.0
    for i, q in enumerate(queries):
        r = sizes[labels[q]] - 1
        if r:
            hits = rel[i, :r]
            total += float((np.cumsum(hits) / np.arange(1, r + 1) * hits).sum() / r)
    return {"top1": float(rel[:, 0].mean()), "mAP@R": total / len(queries)}


def new_query_scores(kind: str, native: np.ndarray, routed: np.ndarray, in_new: np.ndarray,
                     maps: dict) -> np.ndarray:
    if kind == "percentile":
        return percentile_merge(native, routed, in_new)
    if kind == "slots":
        return slot_merge(native, routed, in_new)
    return score_merge(native, routed, in_new, maps[kind])


def calibration_maps(bundle: UpgradeBundle, old: np.ndarray, new: np.ndarray, held: np.ndarray,
                     direction: str) -> dict:
    """raw / regression / distribution fitted on the bundle's own held-out pairs, and its choice."""
    if direction == "new":
        args = (bundle.new_to_old(new[held]), old[held], new[held], new[held], "cosine", "cosine")
        chosen = bundle.new_old_scores
    else:
        args = (bundle.old_to_new(old[held]), new[held], old[held], old[held], "cosine", "cosine")
        chosen = bundle.old_new_scores
    return {"raw": IDENTITY, "regression": fit_score_map(*args), "distribution": fit_distribution_map(*args),
            "chosen": chosen}


def replay(dataset: str, pair: str, method: str, seed: int, log) -> dict:
    vectors, labels = load_wordnet(dataset)
    old_name, new_name = pair.split(":")
    old, new = vectors[old_name], vectors[new_name]
    train, test = stratified_half(labels, seed)
    started = time.perf_counter()
    bundle = build_bundle(old[train], new[train], labels[train], method=method, seed=seed)
    fit_seconds = time.perf_counter() - started
    _, held_local = split_holdout(len(train), HOLDOUT_FRACTION, 5_000, seed)  # the pairs build_bundle held out
    held = train[held_local]
    maps = {"new": calibration_maps(bundle, old, new, held, "new"),
            "old": calibration_maps(bundle, old, new, held, "old")}
    own = (np.arange(len(test)), test)  # each query's own item: -inf before any merge places it
    native_new = normalize(new[test]) @ normalize(new).T
    routed_new = normalize(bundle.new_to_old(new[test])) @ normalize(old).T
    native_new[own] = routed_new[own] = -np.inf
    native_old = normalize(old[test]) @ normalize(old).T
    routed_old = normalize(bundle.old_to_new(old[test])) @ normalize(new).T
    native_old[own] = routed_old[own] = -np.inf
    orders = {"random": np.random.default_rng(seed).permutation(len(labels)),
              "suggested": routed_hub_order(old, bundle.old_to_new, bundle.new_to_old, seed=seed)}
    out = {"dataset": dataset, "pair": pair, "method": method, "selected": bundle.evaluation["selected"],
           "fit_seconds": fit_seconds, "items": len(labels), "queries": len(test),
           "chosen": {"new": bundle.new_old_scores.kind, "old": bundle.old_new_scores.kind}, "levels": []}
    for order_name, order in orders.items():
        for level in LEVELS:
            if order_name == "suggested" and level in (0.0, 1.0):
                continue  # identical to random at the ends
            in_new = np.zeros(len(labels), bool)
            in_new[order[: int(round(level * len(labels)))]] = True
            row = {"order": order_name, "level": level, "new": {}, "old": {}}
            for kind in NEW_MERGES:
                row["new"][kind] = quality(new_query_scores(kind, native_new, routed_new, in_new, maps["new"]),
                                              test, labels)
            reverse = np.where(in_new[None, :], maps["old"]["chosen"](routed_old), native_old)
            row["old"]["reverse"] = quality(reverse, test, labels)
            row["old"]["kept"] = quality(native_old, test, labels)
            row["old"]["kept+slots"] = quality(slot_merge(routed_old, native_old, in_new), test, labels)
            out["levels"].append(row)
            log(f"{dataset:11s} {pair:16s} {order_name:9s} {level:4.0%} new: "
                + " ".join(f"{k} {v['top1']:.3f}/{v['mAP@R']:.3f}" for k, v in row["new"].items())
                + f" | old: reverse {row['old']['reverse']['top1']:.3f} kept {row['old']['kept']['top1']:.3f}")
    return out


def verdicts(run: dict, merge: str) -> dict[str, bool]:
    """New clients under one merge: never below their 0 % level - .005 (the issue's bar), and never
    below the worse of the two ends - .005 (a merge cannot beat an end that is itself lower: where
    new/new is below the 0 % level, every merge that converges to new/new "dips")."""
    lv = {(r["order"], r["level"]): r["new"][merge] for r in run["levels"]}
    start, end = lv[("random", 0.0)], lv[("random", 1.0)]
    rows = list(lv.values())
    return {"new_no_dip": all(r[m] >= start[m] - 0.005 for r in rows for m in METRICS),
            "between_ends": all(r[m] >= min(start[m], end[m]) - 0.005 for r in rows for m in METRICS)}


def versus_interpolation(runs: list[dict], merge: str) -> dict[str, float]:
    """Mean and worst distance of a merge from the straight line between 0 % and 100 %."""
    out: dict[str, list[float]] = {m: [] for m in METRICS}
    for run in runs:
        lv = {(r["order"], r["level"]): r["new"][merge] for r in run["levels"]}
        start, end = run["levels"][0]["new"]["slots"], lv[("random", 1.0)]
        for r in run["levels"]:
            if 0 < r["level"] < 1:
                for m in METRICS:
                    out[m].append(r["new"][merge][m] - (start[m] + (end[m] - start[m]) * r["level"]))
    return {**{f"{m} mean": float(np.mean(v)) for m, v in out.items()},
            **{f"{m} worst": float(np.min(v)) for m, v in out.items()}}


def print_tables(runs: list[dict]) -> None:
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        print(f"\n{dataset}: new-model queries, top-1 / mAP@R (merge of a partly re-embedded gallery)")
        print("| pair | order | re-embedded | " + " | ".join(NEW_MERGES) + " | "
              + " | ".join(f"old: {k}" for k in OLD_MERGES) + " |")
        print("|---|---|---|" + "---|" * (len(NEW_MERGES) + len(OLD_MERGES)))
        for run in (r for r in runs if r["dataset"] == dataset):
            for row in run["levels"]:
                cells = [f"{row['new'][k]['top1']:.3f} / {row['new'][k]['mAP@R']:.3f}" for k in NEW_MERGES]
                cells += [f"{row['old'][k]['top1']:.3f} / {row['old'][k]['mAP@R']:.3f}" for k in OLD_MERGES]
                print(f"| {run['pair']} | {row['order']} | {row['level']:.0%} | " + " | ".join(cells) + " |")
        print("\nnew clients per merge: >= 0 % level - .005 everywhere (no dip) / >= the worse end - .005:")
        for run in (r for r in runs if r["dataset"] == dataset):
            cells = []
            for k in NEW_MERGES:
                v = verdicts(run, k)
                cells.append(f"{k}={'yes' if v['new_no_dip'] else 'no'}/{'yes' if v['between_ends'] else 'NO'}")
            print(f"  {run['pair']:16s} " + " ".join(cells))
        print("\ndistance from the straight line 0 % -> 100 % (mean / worst over pairs, orders, 33 and 67 %):")
        print("| merge | top-1 mean | top-1 worst | mAP@R mean | mAP@R worst | rows below the worse end - .005 |")
        print("|---|---|---|---|---|---|")
        mine = [r for r in runs if r["dataset"] == dataset]
        for k in NEW_MERGES:
            d = versus_interpolation(mine, k)
            below = sum(not verdicts(r, k)["between_ends"] for r in mine)
            print(f"| {k} | {d['top1 mean']:+.4f} | {d['top1 worst']:+.3f} | {d['mAP@R mean']:+.4f} | "
                  f"{d['mAP@R worst']:+.3f} | {below} of {len(mine)} pairs |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sweep_arguments(parser)
    sweep_output_arguments(parser, "merge_replay.json")
    args = parser.parse_args()
    run_sweep(args, lambda d, p: replay(d, p, args.method, args.seed, lambda m: print(m, flush=True)), print_tables)


if __name__ == "__main__":
    main()
