"""Hedged maps: would serving a blend of two maps' queries keep auto within .005 of the better
closed-form baseline where choosing one map does not?

    python -m bench.hedge_replay                                   # the development sets
    python -m bench.hedge_replay --auto --sets wordnet-20k:4300:3 --out bench/results/hedge_fresh_wordnet-20k_draw3.json
    python -m bench.hedge_replay --add-auto-before --out bench/results/hedge_fresh_wordnet-20k_draw3.json

Why: issue #15 asks that `auto` never end more than .005 below the better of Procrustes and ridge
on any held-out set. Choosing *one* of them by out-of-fold evidence misses that in 11 of 192 stored
compat runs (docs/adapters.md, "What zero losses would take"): which baseline is better depends on
whether the test gallery's categories are among the training pairs', which the training pairs
cannot show. A query that is the normalised mean of both maps' queries does not have to guess. The
same question for the adjoint's trades of top-1 for mAP@R: its blend with the baselines' hedge.

For each compat run of a set (pair x split x seed x training mode, the same splits as bench.compat)
this refits Procrustes, ridge and the adjoint on the training half, scores every map and blend on
the test half, and reads auto's choice of that run from the stored compat results (on a fresh
draw, once the rule is fixed: `--auto` fits auto as it is now, `--add-auto-before` the same runs
with the hedge off). Per rule: runs ending more than .005 below the better baseline (top-1 or
mAP@R), the mean gain over it, and the runs failing the ECC where a baseline or the adjoint passes
it. Writes bench/results/hedge_replay.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from adapters import create
from adapters.evaluate import EvalSet
from adapters.methods.auto import HEDGED_PICKS
from adapters.methods.hedge import hedged
from adapters.metrics import passes_ecc
from bench.compat import MODES, PAIRS, RESULTS, class_disjoint, load_wordnet, stratified_half

DEVELOPMENT = ["wordnet-4k", "debian-4k", "wordnet-20k:4300:0"]
COMPAT_FILE = {"wordnet-4k": "compat.json", "debian-4k": "compat_debian-4k.json",
               "wordnet-20k:4300:0": "compat_wordnet-20k.json", "wordnet-20k:4300:2": "compat_wordnet-20k_draw2.json",
               "debian-4k-draw1": "compat_debian-4k-draw1.json"}
ADJOINT_SHARES = (0.25, 0.5, 0.75)  # v: the adjoint's share of the blended query
PROCRUSTES_SHARES = (0.5, 0.75, 1.0)  # w: Procrustes' share of the baselines' hedge (1 = Procrustes alone)
TOLERANCE = 0.005


def blend(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    """The query between two maps' queries, w of the first: the hedge's formula, for any two maps."""
    return hedged(a, b, w)


def parse_set(spec: str) -> tuple[str, int | None, int]:
    """"wordnet-20k:4300:2" -> (dataset, items, draw); a plain name is the whole set."""
    parts = spec.split(":")
    return parts[0], (int(parts[1]) if len(parts) > 1 else None), (int(parts[2]) if len(parts) > 2 else 0)


def score(queries: np.ndarray, test: EvalSet) -> dict[str, float]:
    m = test.metrics(queries, test.old).as_dict()
    return {"top1": float(m["top1"]), "mAP@R": float(m["mAP@R"])}


def out_of_fold_evidence(notes: dict) -> dict:
    """What auto saw out-of-fold for the closed forms and the hedge: each one's new/old top-1 and
    mAP@R, the pool's old/old and the pick -- the rows bench.hedge_guard replays its guards on."""
    metrics = ("top1", "mAP@R")
    return {"old/old": {m: notes["holdout_rows"]["old/old"][m] for m in metrics},
            "picked": notes["hedged_from"] or notes["selected"],
            "candidates": {name: {m: row["new/old"][m] for m in metrics}
                           for name, row in notes["candidates"].items()
                           if name in (*HEDGED_PICKS, "hedge")}}


def run_set(spec: str, pairs: list[str], seeds: list[int], log, with_auto: bool = False) -> list[dict]:
    dataset, items, draw = parse_set(spec)
    vectors, labels = load_wordnet(dataset, items, draw=draw)
    stored = {}
    path = RESULTS / COMPAT_FILE.get(spec, "")
    if COMPAT_FILE.get(spec) and path.exists():
        for r in json.loads(path.read_text())["runs"]:
            stored[(r["pair"], r["split"], r["seed"], r["mode"])] = r["report"]
    out = []
    for pair in pairs:
        old, new = pair.split(":")
        for split, make in (("stratified", stratified_half), ("class-disjoint", class_disjoint)):
            for seed in seeds:
                train, test_rows = make(labels, seed)
                test = EvalSet(vectors[old][test_rows], vectors[new][test_rows], labels[test_rows])
                for mode in MODES:
                    started = time.perf_counter()
                    fit_labels = labels[train] if mode == "labels" else None
                    queries = {}
                    for name in ("procrustes", "affine", "adjoint"):
                        adapter = create(name)
                        adapter.fit(vectors[old][train], vectors[new][train], fit_labels, seed=seed)
                        queries[name] = adapter.transform(test.new)
                    hedge = {w: blend(queries["procrustes"], queries["affine"], w) for w in PROCRUSTES_SHARES}
                    maps = {name: score(q, test) for name, q in queries.items()}
                    maps["old/old"] = score(test.old, test)
                    for w, q in hedge.items():
                        if w < 1.0:
                            maps[f"hedge{w:g}"] = score(q, test)
                        for v in ADJOINT_SHARES:
                            maps[f"adjoint{v:g}+hedge{w:g}"] = score(blend(queries["adjoint"], q, v), test)
                    now = None
                    if with_auto:  # auto as it is now (the hedge rule included), fitted like the compat runs
                        current = create("auto")
                        notes = current.fit(vectors[old][train], vectors[new][train], fit_labels, seed=seed).notes
                        now = {**score(current.transform(test.new), test), "selected": notes["selected"],
                               "hedged_from": notes["hedged_from"], "fit_seconds": current.report.fit_seconds,
                               "out_of_fold": out_of_fold_evidence(notes)}
                    report = stored.get((pair, split, seed, mode))
                    auto = None
                    if report is not None:
                        auto = {"selected": report["selected"],
                                **{m: report["methods"][report["selected"]]["new/old"][m] for m in ("top1", "mAP@R")},
                                "stored_adjoint": {m: report["methods"]["adjoint"]["new/old"][m]
                                                   for m in ("top1", "mAP@R")}}
                    out.append({"set": spec, "pair": pair, "split": split, "seed": seed, "mode": mode,
                                "maps": maps, "auto": auto, "auto_now": now})
                    log(f"{spec} {pair} {split} seed {seed} {mode}: " + ", ".join(
                        f"{n} {maps[n]['top1']:.3f}/{maps[n]['mAP@R']:.4f}"
                        for n in ("procrustes", "affine", "adjoint", "adjoint0.5+hedge1"))
                        + ("" if now is None else f", auto now {now['selected']} (from {now['hedged_from']}) "
                           f"{now['top1']:.3f}/{now['mAP@R']:.4f}") + f" ({time.perf_counter() - started:.1f}s)")
    return out


def add_auto_before(runs: list[dict], log) -> None:
    """Fit auto with the hedge turned off on every run that has `auto_now` (same data, seed and mode):
    what auto would have served on the same draw before the hedge, for a side-by-side count."""
    loaded: dict[str, tuple] = {}
    for run in runs:
        if run.get("auto_now") is None:
            continue
        if run["set"] not in loaded:
            dataset, items, draw = parse_set(run["set"])
            loaded[run["set"]] = load_wordnet(dataset, items, draw=draw)
        vectors, labels = loaded[run["set"]]
        old, new = run["pair"].split(":")
        make = stratified_half if run["split"] == "stratified" else class_disjoint
        train, test_rows = make(labels, run["seed"])
        test = EvalSet(vectors[old][test_rows], vectors[new][test_rows], labels[test_rows])
        before = create("auto", hedge_closed_forms=False)
        notes = before.fit(vectors[old][train], vectors[new][train],
                           labels[train] if run["mode"] == "labels" else None, seed=run["seed"]).notes
        run["auto_before"] = {**score(before.transform(test.new), test), "selected": notes["selected"]}
        log(f"{run['set']} {run['pair']} {run['split']} seed {run['seed']} {run['mode']}: auto without the hedge "
            f"{notes['selected']} {run['auto_before']['top1']:.3f}/{run['auto_before']['mAP@R']:.4f}")


def versus_baselines(run: dict, result: dict[str, float]) -> dict[str, float]:
    """result minus the better of Procrustes and ridge on this run's test set, per metric."""
    return {m: result[m] - max(run["maps"]["procrustes"][m], run["maps"]["affine"][m]) for m in ("top1", "mAP@R")}


def rules(run: dict) -> dict[str, dict[str, float]]:
    """Each rule's test result on one run: every map and blend served alone, and auto's stored choice."""
    out = {name: run["maps"][name] for name in run["maps"] if name != "old/old"}
    if run.get("auto") is not None:
        out["auto, as run"] = {m: run["auto"][m] for m in ("top1", "mAP@R")}
    now = run.get("auto_now")
    if now is not None:
        out["auto, now (with the hedge)"] = {m: now[m] for m in ("top1", "mAP@R")}
    if run.get("auto_before") is not None:
        out["auto, without the hedge"] = {m: run["auto_before"][m] for m in ("top1", "mAP@R")}
    return out


def ecc_misses(run: dict, result: dict[str, float]) -> bool:
    """The ECC failed where Procrustes or the adjoint passes it (mAP@R above old/old)."""
    old_old = run["maps"]["old/old"]["mAP@R"]
    possible = any(passes_ecc(run["maps"][n]["mAP@R"], old_old) for n in ("procrustes", "affine", "adjoint"))
    return possible and not passes_ecc(result["mAP@R"], old_old)


def table(runs: list[dict]) -> str:
    """Per rule and set: runs more than .005 below the better baseline, mean gain, ECC misses."""
    sets = list(dict.fromkeys(r["set"] for r in runs))
    names = list(dict.fromkeys(n for r in runs for n in rules(r)))
    head = "| rule | " + " | ".join(f"{s} ({sum(r['set'] == s for r in runs)})" for s in sets) + " | all |"
    lines = ["Per rule: runs more than .005 below the better of Procrustes and ridge (top-1 or mAP@R); mean "
             "gain over it, top-1 / mAP@R; [runs failing the ECC where a baseline or the adjoint passes]",
             "", head, "|---|" + "---|" * (len(sets) + 1)]
    for name in names:
        cells = []
        for s in [*sets, None]:
            chosen = [r for r in runs if (s is None or r["set"] == s) and name in rules(r)]
            if not chosen:
                cells.append("—")
                continue
            deltas = [versus_baselines(r, rules(r)[name]) for r in chosen]
            losses = sum(min(d.values()) < -TOLERANCE for d in deltas)
            gain = {m: float(np.mean([d[m] for d in deltas])) for m in ("top1", "mAP@R")}
            misses = sum(ecc_misses(r, rules(r)[name]) for r in chosen)
            of = sum(s is None or r["set"] == s for r in runs)
            count = f"{losses}" if len(chosen) == of else f"{losses} of {len(chosen)}"  # e.g. no stored auto run
            cells.append(f"{count}, {gain['top1']:+.3f} / {gain['mAP@R']:+.3f} [{misses}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rows_table(runs: list[dict]) -> str:
    """Runs with auto fitted now, per (set, pair, split, mode), mean of seeds: the maps, auto now (its
    picks, hedged or not), and auto's worst run against the better baseline (** below -.005)."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if r.get("auto_now") is not None:
            groups.setdefault((r["set"], r["pair"], r["split"], r["mode"]), []).append(r)
    if not groups:
        return ""
    names = ("procrustes", "affine", "adjoint", "adjoint0.5+hedge1")
    lines = ["| set | old → new | split | training | procrustes | ridge | adjoint | hedge | auto now (pick → served) "
             "| auto's worst Δ vs the better baseline |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (spec, pair, split, mode), group in groups.items():
        def cell(get, group: list[dict] = group) -> str:
            return (f"{np.mean([get(r)['top1'] for r in group]):.3f} / "
                    f"{np.mean([get(r)['mAP@R'] for r in group]):.4f}")

        picks = ", ".join(f"{r['auto_now']['hedged_from'] or '-'} → {r['auto_now']['selected']}" for r in group)
        worst = min(min(versus_baselines(r, r["auto_now"]).values()) for r in group)
        flag = " **" if worst < -TOLERANCE else ""
        lines.append(f"| {spec} | {pair.replace(':', ' → ')} | {split} | {mode} | "
                     + " | ".join(cell(lambda r, n=n: r["maps"][n]) for n in names)
                     + f" | {cell(lambda r: r['auto_now'])} ({picks}) | {worst:+.4f}{flag} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(DEVELOPMENT),
                        help="dataset[:items[:draw]], comma-separated (the compat sets)")
    parser.add_argument("--pairs", default=",".join([*PAIRS, "e5:mpnet"]))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", type=Path, default=RESULTS / "hedge_replay.json")
    parser.add_argument("--summarise-only", action="store_true")
    parser.add_argument("--auto", action="store_true", help="also fit auto as it is now on every run")
    parser.add_argument("--add-auto-before", action="store_true",
                        help="to the runs stored in --out that have auto: fit auto with the hedge off, side by side")
    args = parser.parse_args()
    if args.summarise_only or args.add_auto_before:
        runs = json.loads(args.out.read_text())
        if args.add_auto_before:
            add_auto_before(runs, lambda m: print(m, flush=True))
            args.out.write_text(json.dumps(runs, indent=1) + "\n")
    else:
        runs = []
        for spec in args.sets.split(","):
            runs += run_set(spec, args.pairs.split(","), [int(s) for s in args.seeds.split(",")],
                            lambda m: print(m, flush=True), args.auto)
            args.out.write_text(json.dumps(runs, indent=1) + "\n")
    print("\n" + table(runs))
    print(rows_table(runs))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
