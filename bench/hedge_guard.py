"""Guards for the hedge: when should auto serve its closed-form pick rather than the hedge?

    python -m bench.hedge_replay --auto --sets wordnet-4k --out bench/results/hedge_margins_wordnet-4k.json
    python -m bench.hedge_guard bench/results/hedge_margins_{wordnet-4k,debian-4k,wordnet-20k}.json

Why: on a fresh Debian draw the hedge failed the ECC on the test half four times (minilm -> e5
stratified, mAP@R .163-.164 against old/old .165-.166) where the adjoint it replaced passed. A
transformation that fails the ECC is not activated by an upgrade policy, so such a run costs an
automatic upgrade. Two guards, each a function of what auto saw out-of-fold:
- `ratio` (what auto does, `hedge_min_procrustes_ratio`): serve the pick when Procrustes' out-of-fold
  mAP@R is below this share of the adjoint's -- the blend's weaker half would drag the adjoint down;
- `margin` (measured, not adopted): serve a pick that passes the ECC when the hedge clears old/old
  by less than this share of old/old's mAP@R.
Both leave the rule without a guard at 0.

bench.hedge_replay --auto records what auto saw (`out_of_fold`), and both choices' test results are
in the same run (the pick's map and the hedge are refitted there with the same parameters), so every
guard is replayed exactly, without refits (checked: the replay reproduces what auto served). Per
guard and set: runs more than .005 below the better baseline, mean gain over it, ECC misses on the
test half where a closed form passes, runs serving the hedge. Writes bench/results/hedge_guard.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from adapters import baselines
from adapters.evaluate import PRIMARY
from adapters.methods.auto import Auto, ecc_margin, hedge_pick
from adapters.metrics import passes_ecc
from bench.compat import RESULTS
from bench.hedge_replay import TOLERANCE, ecc_misses, versus_baselines

DEFAULT_RATIO = Auto.default_params()["hedge_min_procrustes_ratio"]  # the guard auto applies now
HEDGE = "adjoint0.5+hedge1"  # the served hedge's test result in a replay run
RATIOS = (0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)  # Procrustes' out-of-fold mAP@R over the adjoint's
MARGINS = (0.01, 0.02, 0.05, 0.1)  # the hedge's out-of-fold ECC margin, a share of old/old's mAP@R


def rows_of(evidence: dict) -> dict[str, dict]:
    """auto's out-of-fold rows, rebuilt from the recorded evidence."""
    old_old = evidence["old/old"][PRIMARY]
    return {name: {"new/old": values, "ecc": passes_ecc(values[PRIMARY], old_old)}
            for name, values in evidence["candidates"].items()}


def ratio_guard(evidence: dict, ratio: float) -> str:
    """What auto serves with `hedge_min_procrustes_ratio` = ratio: its own rule on the recorded rows."""
    return hedge_pick(evidence["picked"], rows_of(evidence), ratio)


def margin_guard(evidence: dict, margin: float) -> str:
    """The rejected guard: keep a pick that passes the ECC unless the hedge clears it by `margin`."""
    rows = rows_of(evidence)
    chosen = hedge_pick(evidence["picked"], rows, 0.0)
    pick = evidence["picked"]
    if chosen == "hedge" and rows[pick]["ecc"] and ecc_margin(rows["hedge"], evidence["old/old"][PRIMARY]) <= margin:
        return pick
    return chosen


GUARDS = {"ratio": (ratio_guard, RATIOS), "margin": (margin_guard, MARGINS)}


def served_result(run: dict, choice: str) -> dict[str, float]:
    """The test result of serving `choice` on this run."""
    if choice == "hedge":
        return run["maps"][HEDGE]
    if choice in run["maps"]:
        return run["maps"][choice]
    return {m: run["auto_now"][m] for m in ("top1", "mAP@R")}  # a pick that is not a replayed map


def replayable(runs: list[dict]) -> list[dict]:
    """Runs with auto's out-of-fold evidence, whose served result the replay reproduces (checked)."""
    out = []
    for run in runs:
        now = run.get("auto_now") or {}
        if "out_of_fold" not in now:
            continue
        replayed = served_result(run, now["selected"])
        if any(abs(replayed[m] - now[m]) > 1e-5 for m in ("top1", "mAP@R")):
            raise ValueError(f"{run['set']} {run['pair']} {run['split']} seed {run['seed']} {run['mode']}: "
                             f"auto served {now['selected']} at {now['top1']:.4f}/{now['mAP@R']:.4f}, "
                             f"the replay has {replayed['top1']:.4f}/{replayed['mAP@R']:.4f}")
        out.append(run)
    return out


def summarise(runs: list[dict], guard, value: float) -> dict:
    """Losses, mean gain, ECC misses and hedged runs of one guard setting."""
    deltas, misses, hedged = [], 0, 0
    for run in runs:
        choice = guard(run["auto_now"]["out_of_fold"], value)
        result = served_result(run, choice)
        deltas.append(versus_baselines(run, result))
        misses += ecc_misses(run, result)
        hedged += choice == "hedge"
    return {"runs": len(runs), "losses": int(sum(min(d.values()) < -TOLERANCE for d in deltas)),
            "gain": {m: float(np.mean([d[m] for d in deltas])) for m in ("top1", "mAP@R")},
            "ecc_misses": int(misses), "served_hedge": hedged}


def rows_above_baselines(runs: list[dict], ratio: float) -> dict[str, dict[str, int]]:
    """Per set: compat rows (pair x split x training mode, mean of seeds) where what auto serves with
    the ratio guard at `ratio` is above both closed-form baselines on top-1 and on mAP@R -- the compat
    tables' "auto > baselines" column, for auto as it serves now, from the replays alone."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["set"], run["pair"], run["split"], run["mode"]), []).append(run)
    out: dict[str, dict[str, int]] = {}
    for (spec, *_), group in groups.items():
        served = [served_result(r, ratio_guard(r["auto_now"]["out_of_fold"], ratio)) for r in group]
        above = all(np.mean([s[m] for s in served]) > max(np.mean([r["maps"][b][m] for r in group])
                                                          for b in baselines())
                    for m in ("top1", "mAP@R"))
        counts = out.setdefault(spec, {"rows": 0, "above": 0})
        counts["rows"] += 1
        counts["above"] += int(above)
    return out


def table(runs: list[dict]) -> tuple[str, dict]:
    sets = list(dict.fromkeys(r["set"] for r in runs))
    results: dict[str, dict] = {}
    lines = ["Per guard: runs more than .005 below the better baseline; mean gain top-1 / mAP@R; [ECC misses where "
             "a closed form passes]; runs serving the hedge", "",
             "| guard | " + " | ".join(f"{s} ({sum(r['set'] == s for r in runs)})" for s in sets) + " | all |",
             "|---|" + "---|" * (len(sets) + 1)]
    for family, (guard, values) in GUARDS.items():
        for value in values:
            key = f"{family} {value:g}"
            results[key] = {**{s: summarise([r for r in runs if r["set"] == s], guard, value) for s in sets},
                            "all": summarise(runs, guard, value)}
            lines.append(f"| {key} | " + " | ".join(
                f"{c['losses']}, {c['gain']['top1']:+.3f} / {c['gain']['mAP@R']:+.3f} [{c['ecc_misses']}]; "
                f"{c['served_hedge']}" for c in results[key].values()) + " |")
    return "\n".join(lines) + "\n", results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("replays", nargs="+", type=Path, help="bench.hedge_replay --auto results")
    parser.add_argument("--out", type=Path, default=RESULTS / "hedge_guard.json")
    args = parser.parse_args()
    runs = replayable([run for path in args.replays for run in json.loads(path.read_text())])
    text, results = table(runs)
    above = rows_above_baselines(runs, DEFAULT_RATIO)
    print(text + "\nRows (pair x split x training, mean of seeds) where auto as it serves now "
          f"(ratio {DEFAULT_RATIO:g}) is above both closed-form baselines on top-1 and mAP@R: "
          + "; ".join(f"{s} {c['above']} of {c['rows']}" for s, c in above.items()))
    args.out.write_text(json.dumps({"replays": [str(p) for p in args.replays], "guards": results,
                                    "rows_above_baselines": above}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
