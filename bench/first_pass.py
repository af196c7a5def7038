"""The first pass of queries right after ingest, against a second pass over the same queries.

    python -m bench.first_pass [--items 100000] [--queries 1000]

#19 saw the first 1,000 queries after a 100k ingest at p95 5.7 ms against 1.07 ms in a second
pass. Candidate causes, each switched off in its own run so the difference is measured, not
guessed: the hit cache (cold on the first pass: every hit's record is read from SQL), and the
index snapshot the scheduler writes once 50,000 changes have accumulated (a 100k HNSW partition
written and fsynced while the first pass runs). Every run: a fresh service (SQLite + FAISS HNSW
M 32 / efC 80 / efS 64, the embedded default), ingest through the Python client, wait until
searchable, then the same queries twice with one keep-alive http.client connection.
Vectors: WordNet-20k MiniLM (384-d) tiled to --items with small noise ("MiniLM-derived").
Prints a table, writes JSON (bench/results/first_pass.json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, LeanClient, Service, b64, wait_for_index
from nobackfill.client import Client

DATA = ROOT.parent / "shared" / "data" / "wordnet-20k" / "text_minilm.npy"
CONFIGS = {
    "default": {},
    "hit cache off": {"NOBACKFILL_HIT_CACHE_ITEMS": "0"},
    "snapshots deferred": {"NOBACKFILL_SNAPSHOT_EVERY_CHANGES": "100000000"},
}


def derived(items: int, seed: int = 0) -> np.ndarray:
    base = np.load(DATA).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = base[np.arange(items) % len(base)] + rng.normal(scale=0.01, size=(items, base.shape[1])).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def one_pass(lean: LeanClient, queries: np.ndarray) -> list[float]:
    latencies = []
    for q in queries:
        started = time.perf_counter()
        lean.post_json("/v1/collections/g/query", {"model": "m", "vector_b64": b64(q), "k": 10})
        latencies.append((time.perf_counter() - started) * 1e3)
    return latencies


def run_config(env: dict[str, str], vectors: np.ndarray, queries: np.ndarray) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        service = Service(Path(tmp), **env)
        try:
            with Client(service.url, timeout=600) as nb:
                nb.create_model("m", vectors.shape[1])
                nb.create_collection("g", "m", index={"kind": "hnsw", "hnsw_m": 32, "hnsw_ef_construction": 80,
                                                      "hnsw_ef_search": 64})
                started = time.perf_counter()
                nb.upsert_many("g", "m", [str(i) for i in range(len(vectors))], vectors, batch_size=2_000,
                               payloads=[{"n": i} for i in range(len(vectors))])
                wait_for_index(nb.http, "g")
                ingest_s = time.perf_counter() - started
            lean = LeanClient(service.url)
            first, second = one_pass(lean, queries), one_pass(lean, queries)
            lean.close()
            snapshots = sorted(p.name for p in Path(tmp).rglob("*") if p.is_file() and "snap" in p.name)
        finally:
            service.stop()
    stats = {f"{name}_{q}": round(float(np.percentile(lat, q)), 3) for name, lat in (("first", first),
                                                                                      ("second", second))
             for q in (50, 95, 99)}
    ratio = round(stats["first_95"] / stats["second_95"], 2)
    return {"ingest_seconds": round(ingest_s, 1), **stats, "p95_ratio": ratio,
            "snapshot_files": len(snapshots)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "first_pass.json")
    args = parser.parse_args()
    vectors = derived(args.items)
    queries = derived(args.queries, seed=1)  # near gallery items, not equal to them
    report = {"items": args.items, "queries": args.queries, "runs": {}}
    for name in args.configs:
        report["runs"][name] = run_config(CONFIGS[name], vectors, queries)
        print(name, report["runs"][name], flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'config':20} {'first p50/p95/p99 ms':>22} {'second p50/p95/p99 ms':>23} {'p95 ratio':>9}")
    for name, r in report["runs"].items():
        print(f"{name:20} {r['first_50']:>6.2f} {r['first_95']:>6.2f} {r['first_99']:>7.2f}  "
              f"{r['second_50']:>6.2f} {r['second_95']:>6.2f} {r['second_99']:>7.2f}  {r['p95_ratio']:>9.2f}")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
