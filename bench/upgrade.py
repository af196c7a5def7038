"""Mixed-gallery benchmark: quality of both client kinds while a gallery migrates, through the service.

    python -m bench.upgrade                                   # both domains, every pair, auto
    python -m bench.upgrade --datasets wordnet-4k --pairs minilm:mpnet --method procrustes

For each data set (WordNet-4k from ../shared/data; Debian package descriptions built by
bench/debian_packages.py) and encoder pair A -> B, through a real `nobackfill serve` subprocess
over HTTP: register v1 (A), ingest every item in v1, register v2 (B), upload the pairs of a
stratified half with labels, train (durable job), activate (forced when the ECC fails: reported),
then re-embed the gallery into v2 step by step -- in a random order, then (after writing every item
back in v1, which drops its v2 vector) in the order the service suggests (`/backfill`, asked
again before every step, as a client would). After every step, every item of the other half
queries in v2 (new clients) and in v1 (old clients): leave-one-out over the whole gallery,
relevance = same label, top-1 and mAP@R.

Verdicts (issue 14): old clients never below old/old - .005 (both metrics); new clients never below
their own 0 % level - .005. "to mid" is how many re-embeddings each order needs to reach half-way
from the 0 % to the 100 % new-client top-1 (linear between measured levels; the JSON has mAP@R
too): the suggested order should need fewer. Writes bench/results/upgrade.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import ROOT, Service, b64, wait_for_job
from bench.compat import load_wordnet, stratified_half, sweep_arguments

RESULTS = ROOT / "bench" / "results"
LEVELS = (0.0, 0.1, 0.2, 1 / 3, 0.5, 2 / 3, 1.0)
TABLE_LEVELS = (0.0, 1 / 3, 2 / 3, 1.0)
TOLERANCE = 0.005


def ranking_metrics(ranked: list[list[int]], queries: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """top-1 and mAP@R from ranked gallery row indices (the query itself already removed)."""
    sizes = {c: int(n) for c, n in zip(*np.unique(labels, return_counts=True), strict=True)}
    top1 = map_r = 0.0
    for q, row in zip(queries, ranked, strict=True):
        rel = labels[np.asarray(row, dtype=np.int64)] == labels[q] if row else np.zeros(0, bool)
        r = sizes[labels[q]] - 1
        top1 += float(rel[:1].any())
        hits = rel[:r]
        if r:
            precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
            map_r += float((precision * hits).sum() / r)
    n = len(queries)
    return {"top1": top1 / n, "mAP@R": map_r / n}


def service_ranking(client: httpx.Client, model: str, vectors: np.ndarray, queries: np.ndarray,
                    row_of: dict[str, int], k: int) -> list[list[int]]:
    ranked = []
    for start in range(0, len(queries), 256):
        chunk = queries[start : start + 256]
        r = client.post("/v1/collections/g/query", json={"model": model, "vectors_b64": b64(vectors[chunk]),
                                                         "k": k + 1, "include_payload": False})
        r.raise_for_status()
        for q, result in zip(chunk, r.json()["results"], strict=True):
            ranked.append([g for g in (row_of[h["id"]] for h in result["hits"]) if g != q][:k])
    return ranked


def write(client: httpx.Client, model: str, ids: list[str], vectors: np.ndarray, rows) -> None:
    rows = list(rows)
    for start in range(0, len(rows), 2_000):
        chunk = rows[start : start + 2_000]
        client.post("/v1/collections/g/items", json={"model": model, "items": [
            {"id": ids[i], "vector_b64": b64(vectors[i])} for i in chunk]}).raise_for_status()


def needed_for(curve: list[dict], metric: str, target: float, items: int) -> float | None:
    """Re-embeddings needed to reach `target` new-client `metric`, linear between measured levels."""
    for lo, hi in zip(curve, curve[1:], strict=False):
        a, b = lo["new_query"][metric], hi["new_query"][metric]
        if a >= target:
            return lo["level"] * items
        if b >= target > a:
            return (lo["level"] + (target - a) / (b - a) * (hi["level"] - lo["level"])) * items
    return None


def run_pair(dataset: str, pair: str, method: str, seed: int, k: int) -> dict:
    vectors, labels = load_wordnet(dataset)
    old_name, new_name = pair.split(":")
    old, new = vectors[old_name], vectors[new_name]
    n = len(labels)
    ids = [f"i{i}" for i in range(n)]
    row_of = {key: i for i, key in enumerate(ids)}
    train, test = stratified_half(labels, seed)
    out: dict = {"dataset": dataset, "pair": pair, "method": method, "items": n, "queries": len(test), "k": k,
                 "orders": {}}
    with tempfile.TemporaryDirectory() as tmp:
        service = Service(Path(tmp), threads=2)
        try:
            client = httpx.Client(base_url=service.url, timeout=900)
            client.post("/v1/models", json={"name": "v1", "dim": old.shape[1]}).raise_for_status()
            client.post("/v1/collections", json={"name": "g", "model": "v1"}).raise_for_status()
            write(client, "v1", ids, old, range(n))
            out["old_old"] = ranking_metrics(service_ranking(client, "v1", old, test, row_of, k), test, labels)
            client.post("/v1/models", json={"name": "v2", "dim": new.shape[1], "successor_of": "v1"}).raise_for_status()
            upgrade_id = client.get("/v1/upgrades").json()[0]["id"]
            client.post(f"/v1/upgrades/{upgrade_id}/pairs", json={
                "ids": [ids[i] for i in train], "old_vectors_b64": b64(old[train]),
                "new_vectors_b64": b64(new[train]), "labels": [str(labels[i]) for i in train]}).raise_for_status()
            started = time.perf_counter()
            job = client.post(f"/v1/upgrades/{upgrade_id}/train", json={"method": method, "seed": seed})
            job = wait_for_job(client, job.raise_for_status().json()["id"])
            out["train_seconds"] = time.perf_counter() - started
            if job["state"] != "succeeded":
                raise RuntimeError(f"training failed: {job['error']}\n{job['log_tail']}")
            if not job["result"]["activated"]:
                client.post(f"/v1/upgrades/{upgrade_id}/activate", json={"force": True}).raise_for_status()
            record = client.get(f"/v1/upgrades/{upgrade_id}").json()["transformations"][-1]
            out["transformation"] = {"selected": record["evaluation"].get("selected", record["method"]),
                                     "passes_ecc": record["passes_ecc"], "forced": not job["result"]["activated"]}
            for order in ("random", "suggested"):
                write(client, "v1", ids, old, range(n))  # back to 0 %: a v1 write drops the v2 vector
                permutation = np.random.default_rng(seed).permutation(n)
                in_new = np.zeros(n, bool)
                curve = []
                for level in LEVELS:
                    want = int(round(level * n)) - int(in_new.sum())
                    if want > 0 and order == "random":
                        todo = [i for i in permutation if not in_new[i]][:want]
                    elif want > 0:
                        report = client.get("/v1/collections/g/backfill", params={"limit": want}).json()
                        todo = [row_of[s["id"]] for s in report["suggested"]]
                    else:
                        todo = []
                    write(client, "v2", ids, new, todo)
                    in_new[todo] = True
                    row = {"level": level, "reembedded": int(in_new.sum()),
                           "new_query": ranking_metrics(service_ranking(client, "v2", new, test, row_of, k), test,
                                                        labels),
                           "old_query": ranking_metrics(service_ranking(client, "v1", old, test, row_of, k), test,
                                                        labels)}
                    curve.append(row)
                    print(f"{dataset} {pair} {order:9s} {level:4.0%}: new {row['new_query']['top1']:.3f}/"
                          f"{row['new_query']['mAP@R']:.4f} old {row['old_query']['top1']:.3f}/"
                          f"{row['old_query']['mAP@R']:.4f}", flush=True)
                out["orders"][order] = curve
        finally:
            service.stop()
    out["verdict"] = verdict(out)
    return out


def verdict(run: dict) -> dict:
    """The issue's bars, and re-embeddings to reach half-way (0 % -> 100 % new-client mAP@R)."""
    base_old = run["old_old"]
    start = run["orders"]["random"][0]["new_query"]
    end = run["orders"]["random"][-1]["new_query"]
    rows = [r for curve in run["orders"].values() for r in curve]
    old_ok = all(r["old_query"][m] >= base_old[m] - TOLERANCE for r in rows for m in ("top1", "mAP@R"))
    new_ok = all(r["new_query"][m] >= start[m] - TOLERANCE for r in rows for m in ("top1", "mAP@R"))
    to_mid = {}
    for metric in ("top1", "mAP@R"):
        target = (start[metric] + end[metric]) / 2
        to_mid[metric] = {"target": target, **{order: needed_for(curve, metric, target, run["items"])
                                               for order, curve in run["orders"].items()}}
    return {"old_no_regression": old_ok, "new_no_dip": new_ok, "to_mid": to_mid}


def print_table(runs: list[dict]) -> None:
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        print(f"\n{dataset}: top-1 / mAP@R of new-model (v2) and old-model (v1) queries while the gallery migrates")
        print("| pair (method) | order | re-embedded | new queries | old queries | verdict |")
        print("|---|---|---|---|---|---|")
        for run in (r for r in runs if r["dataset"] == dataset):
            v = run["verdict"]
            label = f"{run['pair']} ({run['transformation']['selected']}"
            label += ", forced)" if run["transformation"]["forced"] else ")"
            print(f"| {label} | before | — | — | {run['old_old']['top1']:.3f} / {run['old_old']['mAP@R']:.3f} | "
                  "old/old |")
            for order, curve in run["orders"].items():
                for row in curve:
                    if not any(abs(row["level"] - t) < 1e-9 for t in TABLE_LEVELS):
                        continue
                    if order == "suggested" and row["level"] in (0.0, 1.0):
                        continue
                    nq, oq = row["new_query"], row["old_query"]
                    marks = []
                    if _below(oq, run["old_old"]):
                        marks.append("old regressed")
                    if _below(nq, run["orders"]["random"][0]["new_query"]):
                        marks.append("new dipped")
                    print(f"| {label} | {order} | {row['level']:.0%} | {nq['top1']:.3f} / {nq['mAP@R']:.3f} | "
                          f"{oq['top1']:.3f} / {oq['mAP@R']:.3f} | {', '.join(marks) or 'ok'} |")
            need = v["to_mid"]["top1"]
            print(f"| {label} | to mid | top-1 {need['target']:.3f} | random {_fmt(need['random'])} | "
                  f"suggested {_fmt(need['suggested'])} | "
                  f"{'old ok' if v['old_no_regression'] else 'OLD REGRESSED'}, "
                  f"{'new ok' if v['new_no_dip'] else 'NEW DIPPED'} |")


def _below(row: dict, floor: dict) -> bool:
    return any(row[m] < floor[m] - TOLERANCE for m in ("top1", "mAP@R"))


def _fmt(x: float | None) -> str:
    return "not reached" if x is None else f"{x:.0f} re-embeddings"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sweep_arguments(parser)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--out", default="upgrade.json")
    args = parser.parse_args()
    runs = []
    path = RESULTS / args.out
    RESULTS.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets.split(","):
        for pair in args.pairs.split(","):
            runs.append(run_pair(dataset, pair, args.method, args.seed, args.k))
            path.write_text(json.dumps(runs, indent=2))  # partial results survive an interrupted run
    print_table(runs)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
