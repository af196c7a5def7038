"""Mixed-gallery benchmark: retrieval quality while a gallery migrates from one encoder to the next.

    python -m bench.upgrade                     # minilm -> mpnet, auto, WordNet-4k
    python -m bench.upgrade --old minilm --new e5 --method procrustes

Through the real service (a `nobackfill serve` subprocess, HTTP): register v1 (old encoder), ingest
all of ../shared/data/wordnet-4k in v1, register v2 (successor), upload the pairs of a stratified
half (with labels), train, activate (forced when the ECC fails, and reported), then re-embed the
gallery into v2 step by step (0 %, 33 %, 66 %, 100 %; random order, and at 33 %/66 % also the
service's suggested order) and after each step query with every held-out item's v2 vector (new
clients) and v1 vector (old clients). Quality is leave-one-out over the whole gallery, relevance =
same WordNet category: top-1, top-5, mAP@R. An offline replay of the merge (numpy, same bundle)
shows what calibration of scores is worth (with vs without). Writes bench/results/upgrade.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from adapters.bundle import UpgradeBundle, split_holdout
from adapters.calibration import IDENTITY, fit_distribution_map, fit_score_map
from adapters.vectors import normalize
from bench.common import ROOT, Service, b64, wait_for_job
from bench.compat import load_wordnet, stratified_half

RESULTS = ROOT / "bench" / "results"
LEVELS = (0.0, 1 / 3, 2 / 3, 1.0)


def ranking_metrics(ranked: list[list[int]], queries: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """top-1, top-5 and mAP@R from ranked gallery row indices (the query itself already removed)."""
    sizes = {c: int(n) for c, n in zip(*np.unique(labels, return_counts=True), strict=True)}
    top1 = top5 = map_r = 0.0
    for q, row in zip(queries, ranked, strict=True):
        rel = labels[np.asarray(row, dtype=np.int64)] == labels[q] if row else np.zeros(0, bool)
        r = sizes[labels[q]] - 1
        top1 += float(rel[:1].any())
        top5 += float(rel[:5].any())
        hits = rel[:r]
        if r:
            precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
            map_r += float((precision * hits).sum() / r)
    n = len(queries)
    return {"top1": top1 / n, "top5": top5 / n, "mAP@R": map_r / n}


def service_ranking(client: httpx.Client, model: str, vectors: np.ndarray, queries: np.ndarray,
                    row_of: dict[str, int], k: int) -> list[list[int]]:
    ranked = []
    for start in range(0, len(queries), 256):
        chunk = queries[start : start + 256]
        r = client.post("/v1/collections/wordnet/query",
                        json={"model": model, "vectors_b64": b64(vectors[chunk]), "k": k + 1,
                              "include_payload": False})
        r.raise_for_status()
        for q, result in zip(chunk, r.json()["results"], strict=True):
            rows = [row_of[h["id"]] for h in result["hits"]]
            ranked.append([g for g in rows if g != q][:k])
    return ranked


def offline_ranking(bundle: UpgradeBundle, old: np.ndarray, new: np.ndarray, in_new: np.ndarray,
                    queries: np.ndarray, k: int, query_model: str, score_map) -> list[list[int]]:
    """The service's merge replayed in numpy for v2 ("new") or v1 ("old") queries over a gallery
    partly migrated (`in_new`), with a given map applied to the routed scores."""
    if query_model == "new":
        native = normalize(new[queries]) @ normalize(new).T
        routed = normalize(bundle.new_to_old(new[queries])) @ normalize(old).T
        scores = np.where(in_new[None, :], native, score_map(routed))
    else:
        native = normalize(old[queries]) @ normalize(old).T
        routed = normalize(bundle.old_to_new(old[queries])) @ normalize(new).T
        scores = np.where(in_new[None, :], score_map(routed), native)
    scores[np.arange(len(queries)), queries] = -np.inf
    return [list(row) for row in np.argsort(-scores, axis=1)[:, :k]]


def calibration_candidates(bundle: UpgradeBundle, old: np.ndarray, new: np.ndarray, held: np.ndarray) -> dict:
    """Both calibration candidates per direction, fitted on the pairs the service held out."""
    out = {}
    for direction, (rq, st, nq, ns) in {
        "new": (bundle.new_to_old(new[held]), old[held], new[held], new[held]),
        "old": (bundle.old_to_new(old[held]), new[held], old[held], old[held]),
    }.items():
        out[direction] = {"raw": IDENTITY,
                          "regression": fit_score_map(rq, st, nq, ns, "cosine", "cosine"),
                          "distribution": fit_distribution_map(rq, st, nq, ns, "cosine", "cosine")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", default="minilm")
    parser.add_argument("--new", default="mpnet")
    parser.add_argument("--method", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args()

    vectors, labels = load_wordnet()
    old, new = vectors[args.old], vectors[args.new]
    ids = [f"wn{i}" for i in range(len(labels))]
    row_of = {key: i for i, key in enumerate(ids)}
    train, test = stratified_half(labels, args.seed)
    rng = np.random.default_rng(args.seed)
    order_random = rng.permutation(len(labels))
    out: dict = {"old": args.old, "new": args.new, "method": args.method, "items": len(labels),
                 "queries": len(test), "k": args.k, "levels": []}

    with tempfile.TemporaryDirectory() as tmp:
        service = Service(Path(tmp), threads=2)
        try:
            client = httpx.Client(base_url=service.url, timeout=600)
            client.post("/v1/models", json={"name": "v1", "dim": old.shape[1]}).raise_for_status()
            client.post("/v1/collections", json={"name": "wordnet", "model": "v1"}).raise_for_status()
            client.post("/v1/collections/wordnet/items", json={"model": "v1", "items": [
                {"id": key, "vector_b64": b64(old[i]), "payload": {"label": str(labels[i])}}
                for i, key in enumerate(ids)]}).raise_for_status()
            client.post("/v1/models", json={"name": "v2", "dim": new.shape[1], "successor_of": "v1"}).raise_for_status()
            upgrade_id = client.get("/v1/upgrades").json()[0]["id"]
            client.post(f"/v1/upgrades/{upgrade_id}/pairs", json={
                "ids": [ids[i] for i in train], "old_vectors_b64": b64(old[train]),
                "new_vectors_b64": b64(new[train]), "labels": [str(labels[i]) for i in train]}).raise_for_status()
            started = time.perf_counter()
            job = client.post(f"/v1/upgrades/{upgrade_id}/train", json={"method": args.method, "seed": args.seed})
            job = wait_for_job(client, job.raise_for_status().json()["id"])
            out["train_seconds"] = time.perf_counter() - started
            if job["state"] != "succeeded":
                raise RuntimeError(f"training failed: {job['error']}\n{job['log_tail']}")
            result = job["result"]
            if not result["activated"]:
                client.post(f"/v1/upgrades/{upgrade_id}/activate", json={"force": True}).raise_for_status()
            upgrade = client.get(f"/v1/upgrades/{upgrade_id}").json()
            record = upgrade["transformations"][-1]
            out["transformation"] = {"selected": record["method"], "passes_ecc": record["passes_ecc"],
                                     "forced": not result["activated"], "evaluation_rows": record["evaluation"]["rows"],
                                     "calibration": record["evaluation"]["calibration"]}
            bundle_dir = next((Path(tmp) / "transformations").glob(f"u{upgrade_id}/job*"))
            bundle = UpgradeBundle.load(bundle_dir)
            _, held = split_holdout(len(train), 0.2, 5_000, args.seed)  # the pairs the service held out
            candidates = calibration_candidates(bundle, old, new, train[held])
            out["calibration_chosen"] = {"new": bundle.new_old_scores.kind, "old": bundle.old_new_scores.kind}

            in_new = np.zeros(len(labels), bool)
            for level in LEVELS:
                want = int(round(level * len(labels)))
                todo = [i for i in order_random[:want] if not in_new[i]]
                for start in range(0, len(todo), 2_000):
                    chunk = todo[start : start + 2_000]
                    client.post("/v1/collections/wordnet/items", json={"model": "v2", "items": [
                        {"id": ids[i], "vector_b64": b64(new[i]), "payload": {"label": str(labels[i])}}
                        for i in chunk]}).raise_for_status()
                    in_new[chunk] = True
                row = {"backfilled": level, "new_query": ranking_metrics(
                    service_ranking(client, "v2", new, test, row_of, args.k), test, labels),
                       "old_query": ranking_metrics(
                    service_ranking(client, "v1", old, test, row_of, args.k), test, labels)}
                for side, maps in candidates.items():
                    for name, score_map in maps.items():
                        ranked = offline_ranking(bundle, old, new, in_new, test, args.k, side, score_map)
                        row[f"offline_{side}_{name}"] = ranking_metrics(ranked, test, labels)
                out["levels"].append(row)
                print(f"{level:5.0%} backfilled: new-model queries mAP@R {row['new_query']['mAP@R']:.4f} "
                      f"top-1 {row['new_query']['top1']:.3f} | old-model queries mAP@R "
                      f"{row['old_query']['mAP@R']:.4f} | offline raw-score merge mAP@R "
                      f"{row['offline_new_raw']['mAP@R']:.4f}", flush=True)
            out["backfill_report"] = client.get("/v1/collections/wordnet/backfill", params={"limit": 0}).json()
        finally:
            service.stop()

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"upgrade_{args.old}_{args.new}.json"
    path.write_text(json.dumps(out, indent=2))
    print_table(out)
    print_calibration_table(out)
    print(f"wrote {path}")


def print_calibration_table(out: dict) -> None:
    print(f"\noffline merge replays (mAP@R), service's held-out choice: v2 queries {out['calibration_chosen']['new']}, "
          f"v1 queries {out['calibration_chosen']['old']}")
    print("| query model | re-embedded | raw | regression | distribution |")
    print("|---|---|---|---|---|")
    for side, label in (("new", "v2"), ("old", "v1")):
        for row in out["levels"][1:-1]:
            cells = [f"{row[f'offline_{side}_{name}']['mAP@R']:.4f}" for name in ("raw", "regression", "distribution")]
            print(f"| {label} | {row['backfilled']:.0%} | " + " | ".join(cells) + " |")


def print_table(out: dict) -> None:
    print(f"\n{out['old']} -> {out['new']} ({out['transformation']['selected']}, "
          f"{'forced' if out['transformation']['forced'] else 'passes ECC'}), {out['queries']} queries, "
          f"{out['items']} items, training {out['train_seconds']:.1f} s")
    print("| backfilled | new query top-1 | new query mAP@R | old query top-1 | old query mAP@R | "
          "offline merge, raw scores mAP@R |")
    print("|---|---|---|---|---|---|")
    for row in out["levels"]:
        n, o, raw = row["new_query"], row["old_query"], row["offline_new_raw"]
        print(f"| {row['backfilled']:.0%} | {n['top1']:.3f} | {n['mAP@R']:.4f} | {o['top1']:.3f} | "
              f"{o['mAP@R']:.4f} | {raw['mAP@R']:.4f} |")


if __name__ == "__main__":
    main()
