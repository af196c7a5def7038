"""Which backfill order brings a migrating gallery's quality up soonest, replayed offline.

    python -m bench.backfill_order                                   # WordNet-4k, WordNet-20k sample, Debian-4k
    python -m bench.backfill_order --datasets wordnet-4k --pairs static64:minilm

Setting of bench.merge_replay: every item of the set is in the gallery; the pairs of a stratified
half (with labels) fit the transformation (`--method`, adjoint by default: what `auto` chose on
these sets); the items of the other half query in the new model (leave-one-out over the whole
gallery, relevance = same label) while the gallery is re-embedded under the service's slot merge
(adapters/migration.py), in each order:
- random          the mean of `--random-orders` random permutations;
- predicted error FastFill's rule: the bundle's predicted transformation error, highest first
                  (adapters/reliability.py -- the service's order before this benchmark);
- routed hits     the service's order now: items most often in the routed top 10 of proxy queries
                  (old -> new -> old round trips of the gallery's own vectors), adapters/backfill_order.py.
Per order: mean top-1 and mAP@R over the intermediate levels (the area under the migration
curve), and the re-embeddings needed to reach half-way from the 0 % to the 100 % top-1 (linear
between levels). "served" says whether the service migrates this upgrade by slots or keeps
new-model queries on the route (then no order changes what they get).

The rule was chosen on wordnet-4k and the wordnet-20k sample (4,000 items, draw 0); debian-4k
was not looked at before the choice. Writes bench/results/backfill_order.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from adapters.backfill_order import routed_hub_order
from adapters.bundle import build_bundle
from adapters.migration import slot_merge
from adapters.vectors import normalize
from bench.compat import PAIRS, load_wordnet, run_sweep, stratified_half, sweep_output_arguments
from bench.merge_replay import quality
from bench.upgrade import needed_for

LEVELS = tuple(np.linspace(0.0, 1.0, 9).tolist())
ORDERS = ("random", "predicted error", "routed hits")
DATASETS = {"wordnet-4k": None, "wordnet-20k": 4_000, "debian-4k": None}  # name -> items drawn (None: all)


def curve(native: np.ndarray, routed: np.ndarray, order: np.ndarray, test: np.ndarray,
          labels: np.ndarray) -> list[dict]:
    out = []
    for level in LEVELS:
        in_new = np.zeros(routed.shape[1], bool)
        in_new[order[: int(round(level * len(in_new)))]] = True
        out.append({"level": level, "new_query": quality(slot_merge(native, routed, in_new), test, labels)})
    return out


def mean_curve(curves: list[list[dict]]) -> list[dict]:
    return [{"level": level, "new_query": {m: float(np.mean([c[i]["new_query"][m] for c in curves]))
                                           for m in ("top1", "mAP@R")}}
            for i, level in enumerate(LEVELS)]


def run_pair(dataset: str, pair: str, method: str, seed: int, random_orders: int, log) -> dict:
    vectors, labels = load_wordnet(dataset, DATASETS.get(dataset))
    old_name, new_name = pair.split(":")
    old, new = vectors[old_name], vectors[new_name]
    train, test = stratified_half(labels, seed)
    bundle = build_bundle(old[train], new[train], labels[train], method=method, seed=seed)
    own = (np.arange(len(test)), test)
    native = normalize(new[test]) @ normalize(new).T
    routed = normalize(bundle.new_to_old(new[test])) @ normalize(old).T
    native[own] = routed[own] = -np.inf
    started = time.perf_counter()
    suggested = routed_hub_order(old, bundle.old_to_new, bundle.new_to_old, seed=seed)
    order_seconds = time.perf_counter() - started
    curves = {
        "random": mean_curve([curve(native, routed, np.random.default_rng(seed + 1 + r).permutation(len(old)),
                                    test, labels) for r in range(random_orders)]),
        "predicted error": curve(native, routed, np.argsort(-bundle.reliability.predict_error(old), kind="stable"),
                                 test, labels),
        "routed hits": curve(native, routed, suggested, test, labels),
    }
    start, end = curves["random"][0]["new_query"], curves["random"][-1]["new_query"]
    target = (start["top1"] + end["top1"]) / 2
    out = {"dataset": dataset, "pair": pair, "method": method, "items": len(labels), "queries": len(test),
           "served": "route kept" if bundle.evaluation["migration_curve"]["new_queries_stay_on_route"] else "slots",
           "order_seconds": order_seconds, "mid_top1": target, "orders": {}}
    for name, c in curves.items():
        middle = c[1:-1]
        out["orders"][name] = {
            "curve": c,
            "area": {m: float(np.mean([p["new_query"][m] for p in middle])) for m in ("top1", "mAP@R")},
            "to_mid": needed_for(c, "top1", target, len(labels)) if end["top1"] > start["top1"] else None,
        }
        log(f"{dataset:11s} {pair:16s} {name:15s} " + " ".join(f"{p['new_query']['top1']:.3f}" for p in c)
            + f" | area {out['orders'][name]['area']['top1']:.4f}/{out['orders'][name]['area']['mAP@R']:.4f}")
    return out


def print_table(runs: list[dict]) -> None:
    print("\nnew-model queries while the gallery migrates (slot merge): mean over the intermediate levels, "
          "top-1 / mAP@R; re-embeddings to half-way (top-1)")
    print("| set | upgrade | served | 0 % -> 100 % top-1 | random | predicted error | routed hits | to mid: random "
          "| predicted error | routed hits |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        o = r["orders"]
        first, last = o["random"]["curve"][0]["new_query"]["top1"], o["random"]["curve"][-1]["new_query"]["top1"]
        areas = [f"{o[n]['area']['top1']:.3f} / {o[n]['area']['mAP@R']:.4f}" for n in ORDERS]
        mids = ["—" if o[n]["to_mid"] is None else f"{o[n]['to_mid']:.0f}" for n in ORDERS]
        print(f"| {r['dataset']} | {r['pair']} | {r['served']} | {first:.3f} -> {last:.3f} | " + " | ".join(areas)
              + " | " + " | ".join(mids) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--pairs", default=",".join([*PAIRS, "e5:mpnet"]))
    parser.add_argument("--method", default="adjoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-orders", type=int, default=3)
    sweep_output_arguments(parser, "backfill_order.json")
    args = parser.parse_args()
    run_sweep(args, lambda d, p: run_pair(d, p, args.method, args.seed, args.random_orders,
                                          lambda m: print(m, flush=True)), print_table)


if __name__ == "__main__":
    main()
