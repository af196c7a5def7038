"""Filtered queries: recall@10 against exact filtered search, and latency, at 1 %, 10 % and 50 %.

    python -m bench.filters [--items 20000] [--queries 200] [--backend faiss|milvus]

WordNet-20k MiniLM vectors (../shared/data; 384-d, real text embeddings) in one collection per
index kind (flat, hnsw M=32/efC 80/efS 64, ivf), each item with a payload `{"bucket": b, "label":
lexname}` where `bucket` is a random permutation mod 100, so `bucket < s` selects exactly s %.
For each selectivity: recall@10 of the service's filtered answer against an exact numpy search
over the matching items, p50 / p95 latency, and the plan the service took (pre-filter under 25 %
of the collection, post-filter with over-fetch above: service/core/filtered.py). Unfiltered
queries are timed in the same run, interleaved, for the ratio. Queries are held-out items' own
vectors (not in the gallery). Uses the Python client (nobackfill.client) throughout.
Prints a table, writes JSON (bench/results/filters.json by default).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, Service, wait_for_index
from nobackfill.client import Client

DATA = ROOT.parent / "shared" / "data" / "wordnet-20k"
SELECTIVITIES = (1, 10, 50)
# ordered so each collection's unfiltered timing runs beside its filtered ones
KINDS = {"flat": {"kind": "flat"}, "hnsw": {"kind": "hnsw", "hnsw_m": 32, "hnsw_ef_construction": 80,
                                           "hnsw_ef_search": 64},
         "ivf": {"kind": "ivf", "ivf_nprobe": 16, "ivf_train_min": 5_000}}


def load(items: int, queries: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    vectors = np.load(DATA / "text_minilm.npy").astype(np.float32)
    labels = [json.loads(line)["label"] for line in (DATA / "items.jsonl").read_text().splitlines()]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(vectors))
    gallery, held_out = order[:items], order[items : items + queries]
    return vectors[gallery], [labels[i] for i in gallery], vectors[held_out]


def exact_ids(gallery: np.ndarray, allowed: np.ndarray, q: np.ndarray, k: int) -> list[set[int]]:
    unit = gallery[allowed] / np.linalg.norm(gallery[allowed], axis=1, keepdims=True)
    scores = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ unit.T
    top = np.argsort(-scores, axis=1)[:, :k]
    return [set(allowed[row].tolist()) for row in top]


def timed_queries(nb: Client, name: str, q: np.ndarray, where: dict | None) -> tuple[list[list[int]], list[float],
                                                                                   set[str]]:
    ids, latencies, plans = [], [], set()
    for row in q:
        started = time.perf_counter()
        result = nb.query(name, "minilm", row, k=10, include_payload=False, filter=where)
        latencies.append((time.perf_counter() - started) * 1e3)
        ids.append([int(h.id) for h in result.hits[0]])
        if result.filter is not None:
            plans.add(result.filter["plan"])
    return ids, latencies, plans


def run(items: int, n_queries: int, backend: str) -> dict:
    gallery, labels, queries = load(items, n_queries)
    buckets = np.random.default_rng(1).permutation(items) % 100
    env = {"NOBACKFILL_INDEX_BACKEND": backend} if backend != "faiss" else {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        service = Service(Path(tmp), **env)
        try:
            with Client(service.url, timeout=300) as nb:
                nb.create_model("minilm", 384)
                ids = [str(i) for i in range(items)]
                payloads = [{"bucket": int(b), "label": label} for b, label in zip(buckets, labels, strict=True)]
                for kind, spec in KINDS.items():
                    nb.create_collection(kind, "minilm", index=spec)
                    nb.upsert_many(kind, "minilm", ids, gallery, payloads, batch_size=2_000, progress=True)
                    nb.declare_payload_index(kind, "bucket")
                    wait_for_index(nb.http, kind)
                exact_plain = exact_ids(gallery, np.arange(items), queries, 10)
                for kind in KINDS:
                    plain_ids, plain, _ = timed_queries(nb, kind, queries, None)
                    plain_recall = np.mean([len(set(g) & w) / 10 for g, w in zip(plain_ids, exact_plain, strict=True)])
                    for pct in SELECTIVITIES:
                        where = {"field": "bucket", "range": {"lt": pct}}
                        got, latencies, plans = timed_queries(nb, kind, queries, where)
                        want = exact_ids(gallery, np.flatnonzero(buckets < pct), queries, 10)
                        recall = np.mean([len(set(g) & w) / len(w) for g, w in zip(got, want, strict=True)])
                        _, plain_again, _ = timed_queries(nb, kind, queries[: len(queries) // 4], None)
                        rows.append({
                            "index": kind, "selectivity_pct": pct, "recall_at_10": round(float(recall), 4),
                            "unfiltered_recall_at_10": round(float(plain_recall), 4),
                            "plan": "/".join(sorted(plans)),
                            "p50_ms": round(float(np.percentile(latencies, 50)), 2),
                            "p95_ms": round(float(np.percentile(latencies, 95)), 2),
                            "unfiltered_p50_ms": round(float(np.percentile(plain + plain_again, 50)), 2),
                            "full_hits": float(np.mean([len(g) == 10 for g in got])),
                        })
        finally:
            service.stop()
    return {"items": items, "queries": n_queries, "backend": backend, "dim": 384, "data": "wordnet-20k minilm",
            "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=19_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--backend", choices=["faiss", "milvus"], default="faiss")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = run(args.items, args.queries, args.backend)
    out = args.json or ROOT / "bench" / "results" / f"filters{'' if args.backend == 'faiss' else '_milvus'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['items']} items x {report['dim']}-d ({report['data']}), {report['queries']} held-out queries, "
          f"backend {report['backend']}")
    print(f"{'index':6} {'sel':>5} {'plan':24} {'recall@10':>9} {'unfiltered':>10} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'unfilt p50':>10} {'ratio':>6}")
    for r in report["rows"]:
        print(f"{r['index']:6} {r['selectivity_pct']:>4}% {r['plan']:24} {r['recall_at_10']:>9.4f} "
              f"{r['unfiltered_recall_at_10']:>10.4f} {r['p50_ms']:>7.2f} {r['p95_ms']:>7.2f} "
              f"{r['unfiltered_p50_ms']:>10.2f} {r['p50_ms'] / r['unfiltered_p50_ms']:>6.2f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
