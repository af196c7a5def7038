"""Memory against recall: float, 8-bit and product-quantised IVF lists, with and without re-ranking.

    python -m bench.quantised                          # 1M x 768 (mpnet WordNet vectors, tiled)
    python -m bench.quantised --n 100000 --dim 384     # a quick look

Each configuration is built with the project's own partition classes (index/faiss/), exactly as
the service builds a partition, trained once on the whole gallery (`ivf_train_min = n`, so nlist
is about 4·sqrt(n)). Gallery: real WordNet-20k embeddings tiled with small noise to n rows
(bench.serving.gallery_vectors); queries: WordNet-4k definitions in the same model, real text no
gallery row was made from. Per configuration:
- build seconds (training + adding every vector), 2 cores;
- bytes per vector: the index as FAISS writes it (codes, ids, coarse centroids, graph links), / n;
- recall@10 against exact search over the float32 gallery;
- p50 / p99 ms of single queries on one thread (the service's FAISS_THREADS default); IVF rows at
  the configured nprobe (16) and 4x wider (64) on the same index;
- with re-ranking (`ivf_rerank = r`): the index returns r·10 candidates and they are re-scored
  exactly (service/core/rerank.py). Here the full vectors come from memory; in the service they
  come from the database, one primary-key read of r·10 rows (the `sql_read` column: SQLite, the
  same rows, measured in this run), and stay on disk, so the memory column is the codes' alone.
Run it alone: the latency columns are single-thread timings. Writes bench/results/quantised_<n>_<dim>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np

from bench.serving import gallery_vectors
from index import IndexSpec
from index.faiss.kinds import new_partition
from service.core.rerank import rescore_exactly

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MODEL_OF_DIM = {384: "minilm", 768: "mpnet", 64: "static64"}


def configurations(n: int) -> list[tuple[str, IndexSpec]]:
    """Each built once; a spec with `ivf_rerank` is also searched without re-ranking (same index)."""
    ivf = IndexSpec(kind="ivf", ivf_train_min=n)
    return [
        ("flat (exact)", IndexSpec(kind="flat")),
        ("hnsw M32", IndexSpec(kind="hnsw")),
        ("ivf float32", ivf),
        ("ivf sq8", replace(ivf, ivf_encoding="sq8", ivf_rerank=4)),
        ("ivf pq (4 dims/byte)", replace(ivf, ivf_encoding="pq", ivf_rerank=4)),
        ("ivf pq (8 dims/byte)", replace(ivf, ivf_encoding="pq", ivf_pq_sub_dim=8, ivf_rerank=8)),
    ]


def real_queries(dim: int, count: int) -> tuple[np.ndarray, str]:
    path = SHARED / "wordnet-4k" / f"text_{MODEL_OF_DIM.get(dim, '')}.npy"
    if path.exists():
        q = np.load(path)[:count].astype(np.float32)
        source = f"wordnet-4k {path.name}"
    else:
        rng = np.random.default_rng(7)
        q = rng.normal(size=(count, dim)).astype(np.float32)
        source = "Gaussian"
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.ascontiguousarray(q), source


def index_bytes(index: faiss.Index) -> int:
    with tempfile.NamedTemporaryFile(suffix=".faiss") as fh:
        faiss.write_index(index, fh.name)
        return os.path.getsize(fh.name)


def sql_read_ms(x: np.ndarray, depth: int, reads: int = 200) -> float:
    """Median ms of one primary-key read of `depth` float32 blobs from SQLite (the service's
    re-ranking read), on a table of the gallery's first 200k rows."""
    import sqlite3

    rows = min(len(x), 200_000)
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "vectors.db")
        db.execute("CREATE TABLE v (id INTEGER PRIMARY KEY, vector BLOB)")
        db.executemany("INSERT INTO v VALUES (?, ?)", ((i, x[i].tobytes()) for i in range(rows)))
        db.commit()
        rng = np.random.default_rng(3)
        times = []
        for _ in range(reads):
            ids = rng.choice(rows, depth, replace=False).tolist()
            started = time.perf_counter()
            got = db.execute(f"SELECT id, vector FROM v WHERE id IN ({','.join('?' * depth)})", ids).fetchall()
            np.frombuffer(b"".join(blob for _, blob in got), np.float32)
            times.append(time.perf_counter() - started)
        db.close()
    return 1000 * float(np.median(times))


def measure(name: str, spec: IndexSpec, x: np.ndarray, q: np.ndarray, truth: np.ndarray, k: int) -> list[dict]:
    """One row per search breadth: IVF rows at nprobe as configured and 4x wider (`effort`, the
    same index); the exact flat scan is timed on 50 queries (its recall is 1 by definition)."""
    ids = np.arange(len(x), dtype=np.int64)
    faiss.omp_set_num_threads(2)
    started = time.perf_counter()
    part = new_partition(x.shape[1], "cosine", spec).rebuilt(ids, x)
    build = time.perf_counter() - started
    size = index_bytes(part.index) / len(x)

    def stored(wanted):
        wanted = np.asarray(wanted, dtype=np.int64)
        return wanted, x[wanted]

    faiss.omp_set_num_threads(1)
    rows = []
    variants = [(effort, rerank) for rerank in sorted({0, spec.ivf_rerank})
                for effort in ((1.0, 4.0) if spec.kind == "ivf" else (1.0,))]
    for effort, rerank in variants:
        depth = replace(spec, ivf_rerank=rerank).rerank_depth(k, 1 << 30)
        timed = q[:50] if spec.kind == "flat" else q
        found, latencies = [], []
        for row in timed:
            started = time.perf_counter()
            result = part.search(row[None, :], depth, effort=effort)
            if depth > k:
                result = rescore_exactly(row[None, :], result, stored, "cosine", k)
            latencies.append(time.perf_counter() - started)
            found.append(result.ids[0, :k])
        recall = float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth[: len(timed)], strict=True)]))
        label = name + (f", nprobe {int(spec.ivf_nprobe * effort)}" if effort != 1.0 else "") + (
            f", rerank {rerank}" if rerank else "")
        out = {"name": label, "spec": replace(spec, ivf_rerank=rerank).to_dict(), "effort": effort,
               "structure": part.structure,
               "build_s": round(build, 1), "bytes_per_vector": round(size, 1), "recall@10": round(recall, 4),
               "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 3),
               "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 3), "candidates": depth,
               "timed_queries": len(timed)}
        if getattr(part, "trained", False):
            out["nlist"] = int(part.index.nlist)
            if spec.ivf_encoding == "pq":
                out["pq_m"] = int(part.index.pq.M)
        rows.append(out)
    del part
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--only", default=None, help="configuration names separated by ; (default: all)")
    parser.add_argument("--merge", type=Path, default=None,
                        help="JSON lines this benchmark printed in an earlier run: rows kept unless measured again")
    args = parser.parse_args()
    k = 10
    x, source = gallery_vectors(args.n, args.dim)
    q, query_source = real_queries(args.dim, args.queries)
    faiss.omp_set_num_threads(2)
    started = time.perf_counter()
    truth = faiss.knn(q, x, k, metric=faiss.METRIC_INNER_PRODUCT)[1]
    print(f"{args.n:,} x {args.dim} ({source}); {len(q)} queries ({query_source}); exact top-{k} in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    rows = []
    chosen = configurations(args.n)
    if args.only:
        keep = set(args.only.split(";"))
        chosen = [(n, s) for n, s in chosen if n in keep]
    for name, spec in chosen:
        for row in measure(name, spec, x, q, truth, k):
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.merge:  # rows of an earlier, interrupted run of the same data (JSON lines), measured the same way
        done = [json.loads(line) for line in args.merge.read_text().splitlines() if line.startswith("{")]
        rows = [r for r in done if r["name"] not in {x["name"] for x in rows}] + rows
    reads = {depth: round(sql_read_ms(x, depth), 3) for depth in sorted({r["candidates"] for r in rows} - {k})}
    for row in rows:
        row["sql_read_ms"] = reads.get(row["candidates"])
    flat = next((r for r in rows if r["name"] == "flat (exact)"), None)
    print("\n| index | bytes / vector | vs float32 flat | recall@10 | p50 / p99 ms (1 thread) | "
          "+ SQL read of the candidates (ms) | build s |\n|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['bytes_per_vector'] / flat['bytes_per_vector']:.2f}x" if flat else "-"
        sql = f"{r['sql_read_ms']:.2f}" if r["sql_read_ms"] is not None else "-"
        print(f"| {r['name']} | {r['bytes_per_vector']:,.0f} | {ratio} | {r['recall@10']:.4f} | "
              f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {sql} | {r['build_s']:.0f} |")
    out = RESULTS / f"quantised_{args.n // 1000}k_{args.dim}.json"
    out.write_text(json.dumps({"n": args.n, "dim": args.dim, "k": k, "gallery": source, "queries": query_source,
                               "cpus": os.cpu_count(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
