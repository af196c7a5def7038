"""Word queries for WordNet-20k: each definition's words embedded by the four encoders.

    python -m bench.wordnet_queries                        # -> bench/.cache/data/wordnet-20k/pair_<model>.npy

../shared/data/wordnet-4k ships `pair_<model>.npy` (a definition's words, the asymmetric task's
query); wordnet-20k ships only the definitions. With its words embedded too, the label-free
benchmark can (1) score the asymmetric task on a development split of WordNet-20k, so that a
choice about short queries is made without looking at WordNet-4k, and (2) fit on *query pairs* —
short texts embedded by both models, the way a team would re-embed a sample of its query log,
which costs seconds where re-embedding documents costs hours (../shared/docs/data.md).
The words are embedded exactly as WordNet-4k's were: the `pair` field as it stands, by the same
loaders, e5 in its "query" mode (as ../shared embedded both its texts and its words; `--check`
embeds WordNet-4k's first words and compares them with its shipped vectors).
Files are float16, row i <-> line i of items.jsonl; bench.compat.load_queries finds them.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bench.compat import BUILT, dataset_dir
from bench.encoders import ENCODERS, load_encoder


def words(dataset: str) -> list[str]:
    return [json.loads(line)["pair"] for line in (dataset_dir(dataset) / "items.jsonl").open()]


def check(models: list[str], threads: int, n: int = 32) -> None:
    """Embed WordNet-4k's first `n` words and compare with its shipped pair vectors (cosine)."""
    texts = words("wordnet-4k")[:n]
    for model in models:
        shipped = np.load(dataset_dir("wordnet-4k") / f"pair_{model}.npy")[:n].astype(np.float32)
        ours = load_encoder(model, threads, e5_mode="query")(texts)
        cos = np.sum(shipped * ours, axis=1) / (np.linalg.norm(shipped, axis=1) * np.linalg.norm(ours, axis=1))
        print(f"{model}: cosine to shipped pair vectors min {cos.min():.4f} mean {cos.mean():.4f}", flush=True)
        if cos.min() < 0.99:
            raise SystemExit(f"{model}: these words are not embedded the way wordnet-4k's were")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="wordnet-20k")
    parser.add_argument("--models", default=",".join(ENCODERS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--check", action="store_true", help="only compare with wordnet-4k's shipped word vectors")
    args = parser.parse_args()
    models = args.models.split(",")
    if args.check:
        check(models, args.threads)
        return
    texts = words(args.dataset)
    out = BUILT / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    for model in models:
        started = time.perf_counter()
        vectors = load_encoder(model, args.threads, e5_mode="query")(texts)
        np.save(out / f"pair_{model}.npy", vectors.astype(np.float16))
        print(f"{model}: {vectors.shape} in {time.perf_counter() - started:.0f} s -> {out}", flush=True)


if __name__ == "__main__":
    main()
