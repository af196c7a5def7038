"""How long `auto` takes on ~2k pairs, alone on the machine (issue #15: <= 60 s with labels, <= 20 s without).

    python -m bench.auto_speed                       # minilm -> mpnet on both dev sets, both modes
    python -m bench.auto_speed --pairs minilm:mpnet,mpnet:minilm --repeats 2

Fits `auto` on the training half of the stratified split (seed 0) -- ~2.1k pairs on WordNet-4k,
~2.3k on Debian-4k -- with and without labels, `--repeats` times each, and records wall seconds,
what it chose, and which candidates it did not rank and why. At 100k pairs: `bench.fit_scale`.
Run it alone: on 2 cores anything beside it changes the seconds. Writes bench/results/auto_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from adapters import create
from bench.compat import RESULTS, load_wordnet, stratified_half
from service.cli.evaluate import _jsonable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="wordnet-4k,debian-4k")
    parser.add_argument("--pairs", default="minilm:mpnet,static64:minilm")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--side-by-side-hedge", action="store_true",
                        help="fit auto with and without the hedge (hedge_closed_forms) one after the other, "
                             "to auto_speed_hedge.json")
    args = parser.parse_args()
    variants = {"auto": {}}
    if args.side_by_side_hedge:
        variants = {"with the hedge": {}, "without": {"hedge_closed_forms": False}}
    rows = []
    print(f"{'dataset':11s} {'pair':16s} {'mode':9s} {'pairs':>5s} {'seconds':>8s}  chosen", flush=True)
    for dataset in args.datasets.split(","):
        vectors, labels = load_wordnet(dataset)
        train, _ = stratified_half(labels, 0)
        for pair in args.pairs.split(","):
            old, new = pair.split(":")
            for mode in ("labels", "no labels"):
                for _ in range(args.repeats):
                    for variant, params in variants.items():  # interleaved: the machine's drift hits both
                        started = time.perf_counter()
                        report = create("auto", **params).fit(vectors[old][train], vectors[new][train],
                                                              labels[train] if mode == "labels" else None, seed=0)
                        seconds = time.perf_counter() - started
                        notes = report.notes
                        rows.append({"dataset": dataset, "pair": pair, "mode": mode, "variant": variant,
                                     "pairs": len(train), "seconds": seconds, "selected": notes["selected"],
                                     "not_ranked": {n: v["reason"] for n, v in notes["not_ranked"].items()},
                                     "load_1min": os.getloadavg()[0]})
                        print(f"{dataset:11s} {pair:16s} {mode:9s} {len(train):5d} {seconds:8.1f}  "
                              f"{notes['selected']}" + (f"  ({variant})" if len(variants) > 1 else ""), flush=True)
    out = RESULTS / ("auto_speed_hedge.json" if args.side_by_side_hedge else "auto_speed.json")
    out.write_text(json.dumps(_jsonable({"runs": rows, "cpus": os.cpu_count()}), indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
