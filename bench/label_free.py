"""Label-free upgrades from many pairs: fit on the 20,000 unlabelled WordNet-20k pairs, test on WordNet-4k.

    python -m bench.label_free                            # every pair of bench.compat + e5 -> mpnet
    python -m bench.label_free --pairs minilm:mpnet --methods procrustes,rank_distill

The realistic upgrade: a team re-embeds a sample of its gallery (10k-100k items) with the new model
and has no labels. Every method is fitted on the 20k WordNet-20k pairs without labels (auto too) and
measured on the 4,309 WordNet-4k items, which no fit saw (disjoint definitions):
- symmetric task (methods.md): leave-one-out over the 4,309 definitions, relevance = same WordNet
  category; new/old top-1 and mAP@R, and Drift-Adapter's *recovery* = new/old ÷ new/new (top-1);
- asymmetric task: the query is a definition's *word* embedded by the new model (pair_<new>.npy),
  the gallery the definitions embedded by the old model; the one relevant item is the word's own
  definition: Recall@1, Recall@10, MRR, and recovery of Recall@10 against new/new (word and
  definitions both in the new model). Short queries against documents, as retrieval apps ask them.
The targets of issue #15 are checked per pair and printed as verdicts: minilm <-> mpnet new/old mAP@R
>= new/new and top-1 recovery >= 0.97; every pair beats the best closed-form baseline (procrustes,
affine) on top-1 and mAP@R; asymmetric Recall@10 >= 0.95 x new/new. Writes bench/results/label_free.json.

    python -m bench.label_free --train debian-4k-pairs --test debian-4k --pairs minilm:mpnet,mpnet:minilm

runs the same on the second domain (bench.debian_packages --pairs-sample: packages disjoint from
debian-4k, fitted without labels; no word queries there, so no asymmetric task), writing
bench/results/label_free_<test>.json.

    python -m bench.wordnet_queries && python -m bench.label_free --query-pairs

fits on query pairs too: WordNet-20k's 20k words embedded by both models beside its 20k
definitions (40k pairs), as a team would add a re-embedded sample of its query log; writes
label_free_query_pairs.json. The test words are WordNet-4k's, which no fit sees.

    python -m bench.label_free --dev [--query-pairs]

tests on the development split instead (16,000 WordNet-20k pairs fitted, the other 4,000 items
scored with their labels and, with bench.wordnet_queries' files, their words): where choices are
made before WordNet-4k is looked at; writes label_free_dev_wordnet-20k[_query_pairs].json.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from adapters import baselines, create
from adapters.metrics import pairing_metrics, retrieval_metrics
from adapters.pair_selection import pairs_near_gallery
from bench.compat import PAIRS, RESULTS, load_queries, load_wordnet
from service.cli.evaluate import _jsonable

METHODS = ["procrustes", "affine", "adjoint", "hedge", "lambda_orth", "bt2", "drift_lowrank", "drift_mlp",
           "rank_distill", "neighbour_memory", "auto"]


def symmetric(queries: np.ndarray, gallery: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    m = retrieval_metrics(queries, gallery, labels)
    return {"top1": m.top1, "mAP@R": m.mAP_at_R}


def asymmetric(queries: np.ndarray, gallery: np.ndarray) -> dict[str, float]:
    m = pairing_metrics(queries, gallery)
    return {"R@1": m.recall_at_1, "R@10": m.recall_at_10, "MRR": m.mrr}


DEV_HELD_OUT = 4_000  # --dev: items of the training set held out (seed-0 permutation), the rest fitted


Vectors = dict[str, np.ndarray]


def load_sets(train_set: str, test_set: str, dev: bool, query_pairs: bool, dev_per_category: int | None = None,
              ) -> tuple[Vectors, Vectors | None, Vectors, np.ndarray, Vectors | None]:
    """(fitting vectors, fitting words or None, test vectors, test labels, test words or None).
    With `dev` the test set is the development split: the last DEV_HELD_OUT rows of a seed-0
    permutation of the training set, the fit takes the others (how rules are chosen before a test set
    is looked at; docs/adapters.md). With `dev_per_category` as well, the held-out rows are instead
    the first that many of each category in that permutation (at most half of a category, so every
    category keeps pairs to fit on): a category-balanced gallery against naturally distributed pairs,
    the shift WordNet-4k (<= 100 per category) has against WordNet-20k.
    The training set's words are read only where they are used."""
    train, train_labels = load_wordnet(train_set)
    train_words = load_queries(train_set) if dev or query_pairs else None
    if not dev:
        test, labels = load_wordnet(test_set)
        return train, train_words, test, labels, load_queries(test_set)
    order = np.random.default_rng(0).permutation(len(train_labels))
    if dev_per_category is None:
        fit, held = np.sort(order[:-DEV_HELD_OUT]), np.sort(order[-DEV_HELD_OUT:])
    else:
        members = [order[train_labels[order] == c] for c in np.unique(train_labels)]
        held = np.sort(np.concatenate([m[: min(dev_per_category, len(m) // 2)] for m in members]))
        fit = np.setdiff1d(np.arange(len(train_labels)), held)

    def part(vectors: Vectors | None, rows: np.ndarray) -> Vectors | None:
        return None if vectors is None else {m: v[rows] for m, v in vectors.items()}

    return part(train, fit), part(train_words, fit), part(train, held), train_labels[held], part(train_words, held)


def run_pair(pair: str, methods: list[str], log, train_set: str = "wordnet-20k", test_set: str = "wordnet-4k",
             query_pairs: bool = False, dev: bool = False, dev_per_category: int | None = None,
             near_gallery: int | None = None) -> dict:
    old, new = pair.split(":")
    train, train_words, test, labels, words = load_sets(train_set, test_set, dev, query_pairs, dev_per_category)
    if query_pairs:  # the fitting set's words as further pairs: a re-embedded sample of the query log
        if train_words is None:
            raise SystemExit(f"{train_set} has no word queries (python -m bench.wordnet_queries builds them)")
        train = {m: np.vstack([train[m], train_words[m]]) for m in (old, new)}
    if near_gallery is not None:  # fit where the gallery is: chosen by the gallery's old vectors only
        rows = pairs_near_gallery(train[old], test[old], near_gallery)
        train = {m: train[m][rows] for m in (old, new)}
    words_new = None if words is None else words[new]  # the asymmetric task, where the test set has words
    if dev:
        balanced = f", <= {dev_per_category} per category" if dev_per_category else ""
        test_set = f"{train_set} development split{balanced}"
    out = {"pair": pair, "train": train_set, "test": test_set, "query_pairs": query_pairs,
           "near_gallery": near_gallery, "train_pairs": len(train[old]), "test_items": len(labels),
           "old/old": symmetric(test[old], test[old], labels), "new/new": symmetric(test[new], test[new], labels),
           "methods": {}}
    if words_new is not None:
        out["asym new/new"] = asymmetric(words_new, test[new])
    for name in methods:
        adapter = create(name)
        started = time.perf_counter()
        report = adapter.fit(train[old], train[new], None, seed=0)
        seconds = time.perf_counter() - started
        row = {"fit_seconds": seconds, "steps": report.steps, "stayed_at_start": report.stayed_at_start,
               "new/old": symmetric(adapter.transform(test[new]), test[old], labels)}
        row["recovery_top1"] = row["new/old"]["top1"] / out["new/new"]["top1"]
        if words_new is not None:
            row["asym new/old"] = asymmetric(adapter.transform(words_new), test[old])
            row["recovery_R@10"] = row["asym new/old"]["R@10"] / out["asym new/new"]["R@10"]
        if name == "auto":
            row["selected"] = report.notes["selected"]
            row["not_ranked"] = {n: v["reason"] for n, v in report.notes["not_ranked"].items()}
        out["methods"][name] = row
        asym = (f"  asym R@10 {row['asym new/old']['R@10']:.3f} ({row['recovery_R@10']:.3f})"
                if words_new is not None else "")
        log(f"{pair:16s} {name:14s} {row['new/old']['top1']:.3f} / {row['new/old']['mAP@R']:.4f}  "
            f"rec {row['recovery_top1']:.3f}{asym}  {seconds:6.1f} s"
            + (f"  -> {row['selected']}" if name == "auto" else ""))
    out["verdicts"] = verdicts(out)
    return out


def verdicts(result: dict) -> dict[str, bool | None]:
    """Issue #15's label-free targets for one pair (None: the target does not apply to this pair)."""
    methods = result["methods"]
    measured = [b for b in baselines() if b in methods]
    chosen = methods.get("auto")
    out: dict[str, bool | None] = {}
    if chosen is not None:
        best = {m: max(methods[b]["new/old"][m] for b in measured) for m in ("top1", "mAP@R")} if measured else {}
        out["auto beats best baseline (top-1 and mAP@R)"] = (
            all(chosen["new/old"][m] > best[m] for m in best) if measured else None)  # no baseline run
        out["asym R@10 >= 0.95 x new/new"] = chosen["recovery_R@10"] >= 0.95 if "recovery_R@10" in chosen else None
        strong = result["pair"] in ("minilm:mpnet", "mpnet:minilm")
        out["mAP@R >= new/new"] = chosen["new/old"]["mAP@R"] >= result["new/new"]["mAP@R"] if strong else None
        out["top-1 recovery >= 0.97"] = chosen["recovery_top1"] >= 0.97 if strong else None
    return out


def table(results: list[dict]) -> str:
    names = list(results[0]["methods"])
    head = "| old → new | new/new | " + " | ".join(names) + " |"
    first = results[0]
    kind = ", definitions + words" if first.get("query_pairs") else ""
    if first.get("near_gallery"):
        kind += f", those among the {first['near_gallery']} nearest of a test item by the old model"
    lines = [f"new/old top-1 / mAP@R on {first['test']} (fitted on {first['train_pairs']:,} unlabelled "
             f"{first['train']} pairs{kind}); recovery = new/old ÷ new/new top-1 in brackets", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        cells = [f"{m['new/old']['top1']:.3f} / {m['new/old']['mAP@R']:.4f} ({m['recovery_top1']:.2f})"
                 + (f" → {m['selected']}" if "selected" in m else "") for m in r["methods"].values()]
        lines.append(f"| {r['pair'].replace(':', ' → ')} | {r['new/new']['top1']:.3f} / {r['new/new']['mAP@R']:.4f} | "
                     + " | ".join(cells) + " |")
    asymmetric_rows = [r for r in results if "asym new/new" in r]
    if asymmetric_rows:
        lines += ["", "Asymmetric task (word query in the new model, definitions in the old): Recall@1 / Recall@10 / "
                  "MRR; R@10 recovery against new/new in brackets", "", head.replace("new/new", "new/new (words)"),
                  "|" + "---|" * (head.count("|") - 1)]
    for r in asymmetric_rows:
        nn = r["asym new/new"]
        cells = [f"{m['asym new/old']['R@1']:.3f} / {m['asym new/old']['R@10']:.3f} / {m['asym new/old']['MRR']:.3f} "
                 f"({m['recovery_R@10']:.2f})" for m in r["methods"].values()]
        lines.append(f"| {r['pair'].replace(':', ' → ')} | {nn['R@1']:.3f} / {nn['R@10']:.3f} / {nn['MRR']:.3f} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Fit seconds ({first['train_pairs']:,} pairs, 2 CPU cores): " + "; ".join(
        f"{r['pair']}: " + ", ".join(f"{n} {m['fit_seconds']:.0f}" for n, m in r["methods"].items()) for r in results)]
    if results[0]["verdicts"]:  # the targets are auto's: none without it
        lines += ["", "| old → new | " + " | ".join(results[0]["verdicts"]) + " |",
                  "|" + "---|" * (len(results[0]["verdicts"]) + 1)]
        for r in results:
            marks = ["n/a" if v is None else ("met" if v else "**not met**") for v in r["verdicts"].values()]
            lines.append(f"| {r['pair'].replace(':', ' → ')} | " + " | ".join(marks) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default=",".join([*PAIRS, "e5:mpnet"]))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--train", default="wordnet-20k", help="the unlabelled fitting pairs' data set")
    parser.add_argument("--test", default="wordnet-4k", help="the labelled test set no fit sees")
    parser.add_argument("--query-pairs", action="store_true",
                        help="fit on the training set's words too (bench.wordnet_queries): definitions + words pairs")
    parser.add_argument("--dev", action="store_true",
                        help=f"test on the training set's development split ({DEV_HELD_OUT:,} items held out), "
                             "not on --test")
    parser.add_argument("--dev-per-category", type=int, default=None,
                        help="with --dev: hold out up to this many items of each category instead (a balanced gallery)")
    parser.add_argument("--near-gallery", type=int, default=None, metavar="M",
                        help="fit only on the training pairs among the M nearest (old model) of a test gallery item "
                             "(adapters/pair_selection.py)")
    parser.add_argument("--suffix", default="", help="appended to the results' file name (a run of a few methods "
                                                     "beside the stored full run)")
    args = parser.parse_args()
    if args.dev_per_category is not None and not args.dev:
        parser.error("--dev-per-category needs --dev")
    results = [run_pair(p, args.methods.split(","), lambda m: print(m, flush=True), args.train, args.test,
                        args.query_pairs, args.dev, args.dev_per_category, args.near_gallery)
               for p in args.pairs.split(",")]
    text = table(results)
    print("\n" + text)
    default = (args.train, args.test) == ("wordnet-20k", "wordnet-4k")
    name = "label_free" if default else f"label_free_{args.test}"
    name = f"label_free_dev_{args.train}" if args.dev else name
    name += f"_balanced{args.dev_per_category}" if args.dev_per_category is not None else ""
    name += "_query_pairs" if args.query_pairs else ""
    name += f"_near{args.near_gallery}" if args.near_gallery is not None else ""
    out = RESULTS / (name + args.suffix + ".json")
    out.write_text(json.dumps(_jsonable({"results": results}), indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
