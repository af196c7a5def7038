"""Query latency through the service vs in-process FAISS, measured side by side in one run.

    python -m bench.serving                      # 100k x 384-d, flat and hnsw
    python -m bench.serving --n 1000000 --dim 768 --kinds flat,hnsw,ivf

What it does, per index kind:
1. builds a gallery of `n` vectors: real MiniLM embeddings of WordNet definitions
   (../shared/data/wordnet-20k) tiled with small Gaussian noise when the file is there and the dim
   matches, clustered Gaussian data otherwise (the table says which);
2. builds the same raw FAISS index in this process and times single queries (1 and 2 OpenMP
   threads) and batches of 32;
3. starts the real service (`nobackfill serve`, a separate process, SQLite + FAISS under a temp
   dir), ingests the same vectors over HTTP (base64, durable upserts) and times the same queries
   end to end over a keep-alive HTTP connection: JSON lists and base64, single and batch of 32.
Prints a table and writes JSON to bench/results/serving.json. Ratios compare numbers from this
run only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import httpx
import numpy as np

from bench.common import Service, b64

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"


# ---- data -------------------------------------------------------------------------------------
def gallery_vectors(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """n unit vectors: real embeddings tiled with noise if available, else a Gaussian mixture."""
    rng = np.random.default_rng(seed)
    real = {384: "text_minilm.npy", 768: "text_mpnet.npy", 64: "text_static64.npy"}.get(dim)
    path = SHARED / "wordnet-20k" / real if real else None
    if path is not None and path.exists():
        base = np.load(path).astype(np.float32)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        reps = rng.integers(0, len(base), n)
        x = base[reps] + rng.normal(scale=0.2 / np.sqrt(dim), size=(n, dim)).astype(np.float32)
        source = f"wordnet-20k {real} tiled with noise"
    else:
        centres = rng.normal(size=(max(16, n // 1000), dim)).astype(np.float32)
        x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
        source = "Gaussian mixture"
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32), source


def query_vectors(gallery: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = gallery[rng.integers(0, len(gallery), count)] + rng.normal(scale=0.02, size=(count, gallery.shape[1]))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.ascontiguousarray(q, dtype=np.float32)


# ---- timing helpers ---------------------------------------------------------------------------
@dataclass
class Timing:
    p50_ms: float
    p99_ms: float
    qps: float  # queries (not requests) per second

    def as_dict(self) -> dict:
        return {"p50_ms": round(self.p50_ms, 4), "p99_ms": round(self.p99_ms, 4), "qps": round(self.qps, 1)}


def timed(fn, calls: list, per_call_queries: int, warmup: int = 20) -> Timing:
    for args in calls[:warmup]:
        fn(args)
    samples = []
    start = time.perf_counter()
    for args in calls:
        t0 = time.perf_counter()
        fn(args)
        samples.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    ms = np.array(samples) * 1000
    return Timing(float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), len(calls) * per_call_queries / total)


# ---- raw FAISS --------------------------------------------------------------------------------
def raw_index(kind: str, x: np.ndarray, ef_search: int, nprobe: int) -> faiss.Index:
    dim = x.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        index.add(x)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.add(x)
        index.hnsw.efSearch = ef_search
    else:
        nlist = int(4 * np.sqrt(len(x)))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        index.train(x[rng.choice(len(x), min(len(x), 256 * nlist), replace=False)])
        index.add(x)
        index.nprobe = nprobe
        index.own_fields = True  # the index now frees the quantizer; Python must not
        quantizer.this.disown()
    return index


def ingest(client: httpx.Client, collection: str, x: np.ndarray, batch: int = 5_000) -> float:
    """Upsert all vectors (durable, base64); return vectors per second."""
    t0 = time.perf_counter()
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        items = [{"id": f"item-{start + i}", "vector_b64": b64(v)} for i, v in enumerate(chunk)]
        r = client.post(f"/v1/collections/{collection}/items", json={"model": "bench-model", "items": items})
        r.raise_for_status()
    return len(x) / (time.perf_counter() - t0)


# ---- one configuration ------------------------------------------------------------------------
def run_kind(kind: str, x: np.ndarray, queries: np.ndarray, args, client: httpx.Client) -> dict:
    row: dict = {"kind": kind}
    t0 = time.perf_counter()
    index = raw_index(kind, x, args.ef_search, args.nprobe)
    row["raw_build_s"] = round(time.perf_counter() - t0, 2)
    singles = [queries[i : i + 1] for i in range(len(queries))]
    batches = [queries[i : i + 32] for i in range(0, len(queries) - 31, 32)]
    for threads in (1, 2):
        faiss.omp_set_num_threads(threads)
        row[f"faiss_single_t{threads}"] = timed(lambda q, ix=index: ix.search(q, args.k), singles, 1).as_dict()
        row[f"faiss_batch32_t{threads}"] = timed(lambda q, ix=index: ix.search(q, args.k), batches, 32).as_dict()
    faiss.omp_set_num_threads(args.threads)
    del index

    name = f"bench-{kind}"
    spec = {"kind": kind, "hnsw_ef_search": args.ef_search, "ivf_nprobe": args.nprobe,
            "ivf_train_min": min(10_000, len(x))}
    client.post("/v1/collections", json={"name": name, "model": "bench-model", "index": spec}).raise_for_status()
    row["ingest_vectors_per_s"] = round(ingest(client, name, x), 1)
    url = f"/v1/collections/{name}/query"

    def post(body: dict) -> None:
        r = client.post(url, json=body)
        if r.status_code != 200:
            raise RuntimeError(r.text)

    base = {"model": "bench-model", "k": args.k, "include_payload": False}
    row["service_single_json"] = timed(lambda q: post({**base, "vector": q[0].tolist()}), singles, 1).as_dict()
    row["service_single_b64"] = timed(lambda q: post({**base, "vector_b64": b64(q[0])}), singles, 1).as_dict()
    row["service_batch32_json"] = timed(lambda q: post({**base, "vectors": q.tolist()}), batches, 32).as_dict()
    row["service_batch32_b64"] = timed(lambda q: post({**base, "vectors_b64": b64(q)}), batches, 32).as_dict()
    ref = row[f"faiss_single_t{args.threads}"]["p50_ms"]
    row["ratio_single_b64_p50"] = round(row["service_single_b64"]["p50_ms"] / ref, 2)
    row["ratio_single_json_p50"] = round(row["service_single_json"]["p50_ms"] / ref, 2)
    row["overhead_single_b64_p50_ms"] = round(row["service_single_b64"]["p50_ms"] - ref, 3)
    return row


def print_table(result: dict) -> None:
    cols = [("kind", "kind"), ("FAISS 1q t1", "faiss_single_t1"), ("FAISS 1q t2", "faiss_single_t2"),
            ("svc 1q json", "service_single_json"), ("svc 1q b64", "service_single_b64"),
            ("FAISS 32q t1", "faiss_batch32_t1"), ("svc 32q json", "service_batch32_json"),
            ("svc 32q b64", "service_batch32_b64")]
    print(f"\n{result['n']:,} x {result['dim']}-d ({result['data']}), k={result['k']}, "
          f"service FAISS threads={result['service_threads']}; p50 / p99 ms per request")
    print("| " + " | ".join(c for c, _ in cols) + " | svc/FAISS p50 (b64) | ingest vec/s |")
    print("|" + "---|" * (len(cols) + 2))
    for row in result["rows"]:
        cells = [row["kind"]] + [f"{row[k]['p50_ms']:.3f} / {row[k]['p99_ms']:.3f}" for _, k in cols[1:]]
        cells += [f"{row['ratio_single_b64_p50']:.2f}x (+{row['overhead_single_b64_p50_ms']:.3f} ms)",
                  f"{row['ingest_vectors_per_s']:,.0f}"]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--kinds", default="flat,hnsw")
    parser.add_argument("--queries", type=int, default=640)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="FAISS threads in the service")
    parser.add_argument("--ef-search", type=int, default=64)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS / "serving.json")
    args = parser.parse_args()

    x, source = gallery_vectors(args.n, args.dim)
    queries = query_vectors(x, args.queries)
    result = {"n": args.n, "dim": args.dim, "k": args.k, "data": source, "service_threads": args.threads,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "faiss": faiss.__version__}, "rows": []}
    data_dir = Path(tempfile.mkdtemp(prefix="nobackfill-bench-"))
    service = Service(data_dir, args.threads)
    try:
        with httpx.Client(base_url=service.url, timeout=300) as client:
            client.post("/v1/models", json={"name": "bench-model", "dim": args.dim}).raise_for_status()
            for kind in args.kinds.split(","):
                result["rows"].append(run_kind(kind, x, queries, args, client))
    finally:
        service.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
