"""Query latency through the service vs in-process FAISS, measured side by side in one run.

    python -m bench.serving                      # 100k x 384-d, flat and hnsw
    python -m bench.serving --n 1000000 --dim 768 --kinds flat,hnsw,ivf
    python -m bench.serving --backend milvus     # on Milvus vs raw pymilvus (bench/serving_milvus.py)

What it does, per index kind:
1. builds a gallery of `n` vectors: real MiniLM embeddings of WordNet definitions
   (../shared/data/wordnet-20k) tiled with small Gaussian noise when the file is there and the dim
   matches, clustered Gaussian data otherwise (the table says which);
2. builds the same raw FAISS index in this process and times single queries (1 and 2 OpenMP
   threads) and batches of 32;
3. starts the real service (`nobackfill serve`, a separate process, SQLite + FAISS under a temp
   dir), ingests the same vectors over HTTP (base64, durable upserts) and times the same queries
   end to end over a keep-alive HTTP connection (a lean http.client connection, so the numbers
   are the service's; single base64 queries are also timed through httpx to show what a heavier
   client adds): JSON lists and base64, single and batch of 32, and single queries over two
   concurrent connections (QPS) -- after waiting for background index builds (IVF training,
   HNSW compaction) to finish, so each kind is timed on its final structure;
4. (unless --no-upgrade) registers a successor model (the gallery's space rotated, plus noise),
   trains a Procrustes map through the API and times v2 queries through the transformation, the
   transformation alone in process, and a mixed gallery with half the items re-embedded;
5. measures memory per vector and the restart time from snapshots and from the database alone.
Prints a table and writes JSON to bench/results/serving_<n>_<dim>.json. Ratios compare numbers from this
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
from functools import partial
from pathlib import Path

import faiss
import httpx
import numpy as np

from bench.common import ROOT, LeanClient, Service, b64, wait_for_index, wait_for_job

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


# ---- raw FAISS ---------------------------------------------------------------------------------
IVF_POINTS_PER_LIST = 64  # training points per inverted list, the same for raw FAISS and the service


IVF_NLIST_OVERRIDE: int | None = None  # --ivf-nlist


def ivf_nlist(n: int) -> int:
    """The same list count for the raw index and the service's collection (compare like with like)."""
    return IVF_NLIST_OVERRIDE or int(4 * np.sqrt(n))


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
        nlist = ivf_nlist(len(x))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        index.train(x[rng.choice(len(x), min(len(x), IVF_POINTS_PER_LIST * nlist), replace=False)])
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
def run_kind(kind: str, x: np.ndarray, queries: np.ndarray, args, client: httpx.Client, service: Service) -> dict:
    row: dict = {"kind": kind}
    t0 = time.perf_counter()
    index = raw_index(kind, x, args.ef_search, args.nprobe)
    row["raw_build_s"] = round(time.perf_counter() - t0, 2)
    if kind == "ivf":
        row["ivf_nlist"] = ivf_nlist(len(x))
    row["faiss_bytes_per_vector"] = round(len(faiss.serialize_index(index)) / len(x), 1)
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
            "ivf_nlist": ivf_nlist(len(x)), "ivf_train_min": min(len(x), IVF_POINTS_PER_LIST * ivf_nlist(len(x)))}
    client.post("/v1/collections", json={"name": name, "model": "bench-model", "index": spec}).raise_for_status()
    rss_before = service.rss_bytes()
    row["ingest_vectors_per_s"] = round(ingest(client, name, x), 1)
    row["index_settle_s"] = round(wait_for_index(client, name), 2)  # background IVF training / compaction
    row["structures"] = {p["model"]: p["structure"] for p in client.get(f"/v1/collections/{name}").json()["partitions"]}
    row["service_rss_bytes_per_vector"] = round((service.rss_bytes() - rss_before) / len(x), 1)
    budget = 0.8 * 24 * 2**30  # this machine: 24 GiB, leave a fifth for the OS, Python and the database cache
    row["largest_gallery_24gib"] = int(budget / max(row["faiss_bytes_per_vector"], 1))
    url = f"/v1/collections/{name}/query"

    lean = LeanClient(service.url)
    post = partial(lean.post_json, url)

    def post_httpx(body: dict) -> None:
        r = client.post(url, json=body)
        if r.status_code != 200:
            raise RuntimeError(r.text)

    base = {"model": "bench-model", "k": args.k, "include_payload": False}
    row["service_single_json"] = timed(lambda q: post({**base, "vector": q[0].tolist()}), singles, 1).as_dict()
    row["service_single_b64"] = timed(lambda q: post({**base, "vector_b64": b64(q[0])}), singles, 1).as_dict()
    row["service_single_b64_httpx"] = timed(lambda q: post_httpx({**base, "vector_b64": b64(q[0])}), singles,
                                            1).as_dict()
    row["service_batch32_json"] = timed(lambda q: post({**base, "vectors": q.tolist()}), batches, 32).as_dict()
    row["service_batch32_b64"] = timed(lambda q: post({**base, "vectors_b64": b64(q)}), batches, 32).as_dict()
    row["service_single_b64_2conn"] = concurrent_qps(service.url, url, base, singles, connections=2)
    ref = row[f"faiss_single_t{args.threads}"]["p50_ms"]
    row["ratio_single_b64_p50"] = round(row["service_single_b64"]["p50_ms"] / ref, 2)
    row["ratio_single_json_p50"] = round(row["service_single_json"]["p50_ms"] / ref, 2)
    row["overhead_single_b64_p50_ms"] = round(row["service_single_b64"]["p50_ms"] - ref, 3)
    if args.upgrade:
        row.update(upgrade_phase(kind, name, x, queries, singles, args, client, post, base))
    lean.close()
    return row


def concurrent_qps(base_url, url: str, body: dict, singles: list, connections: int) -> dict:
    """Queries per second with several keep-alive connections sending single queries at once."""
    import threading

    per = [singles[i::connections] for i in range(connections)]
    samples: list[float] = []
    lock = threading.Lock()

    def worker(calls: list) -> None:
        c = LeanClient(base_url)
        mine = []
        for q in calls:
            t0 = time.perf_counter()
            c.post_json(url, {**body, "vector_b64": b64(q[0])})
            mine.append(time.perf_counter() - t0)
        c.close()
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=worker, args=(calls,)) for calls in per]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = time.perf_counter() - started
    ms = np.array(samples) * 1000
    return Timing(float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), len(samples) / total).as_dict()


def upgrade_phase(kind: str, name: str, x: np.ndarray, queries: np.ndarray, singles: list, args, client, post,
                  base: dict) -> dict:
    """A successor model (the gallery's space rotated, plus noise) with a trained Procrustes map:
    (a) v2 queries against the all-v1 gallery -- one transformation in the path;
    (b) half the items re-embedded into v2 -- a mixed gallery of two partitions.
    Also times the transformation alone, in process, per query."""
    from adapters.bundle import UpgradeBundle

    out: dict = {}
    rng = np.random.default_rng(7)
    rot, _ = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))
    rot = rot.astype(np.float32)
    v2_name = f"bench-v2-{kind}"
    v2_model = {"name": v2_name, "dim": x.shape[1], "successor_of": "bench-model"}
    client.post("/v1/models", json=v2_model).raise_for_status()
    uid = next(u["id"] for u in client.get("/v1/upgrades").json() if u["new_model"] == v2_name)
    pairs = rng.choice(len(x), min(5_000, len(x)), replace=False)
    new_pairs = x[pairs] @ rot + rng.normal(scale=0.01, size=(len(pairs), x.shape[1])).astype(np.float32)
    client.post(f"/v1/upgrades/{uid}/pairs", json={"old_vectors_b64": b64(x[pairs]),
                                                   "new_vectors_b64": b64(new_pairs)}).raise_for_status()
    job = client.post(f"/v1/upgrades/{uid}/train", json={"method": "procrustes"}).raise_for_status().json()
    job = wait_for_job(client, job["id"])
    client.post(f"/v1/upgrades/{uid}/activate", json={"force": True}).raise_for_status()
    v2_singles = [q @ rot for q in singles]
    body = {**base, "model": v2_name}
    out["service_single_b64_transformed"] = timed(lambda q: post({**body, "vector_b64": b64(q[0])}), v2_singles,
                                                  1).as_dict()
    bundle_dir = next(Path(args.data_dir).glob(f"transformations/u{uid}/job*"))
    bundle = UpgradeBundle.load(bundle_dir)
    out["transform_only_us"] = round(timed(lambda q: bundle.new_to_old(q), v2_singles, 1).p50_ms * 1000, 1)
    half = np.arange(0, len(x), 2)
    for start in range(0, len(half), 5_000):
        chunk = half[start : start + 5_000]
        items = [{"id": f"item-{i}", "vector_b64": b64(x[i] @ rot)} for i in chunk]
        client.post(f"/v1/collections/{name}/items", json={"model": v2_name, "items": items}).raise_for_status()
    out["mixed_index_settle_s"] = round(wait_for_index(client, name), 2)
    out["mixed_structures"] = {p["model"]: p["structure"]
                               for p in client.get(f"/v1/collections/{name}").json()["partitions"]}
    out["service_single_b64_mixed"] = timed(lambda q: post({**body, "vector_b64": b64(q[0])}), v2_singles,
                                            1).as_dict()
    return out


def print_table(result: dict) -> None:
    cols = [("kind", "kind"), ("FAISS 1q t1", "faiss_single_t1"), ("FAISS 1q t2", "faiss_single_t2"),
            ("svc 1q json", "service_single_json"), ("svc 1q b64", "service_single_b64"),
            ("svc 1q b64 via httpx", "service_single_b64_httpx"),
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
    print(f"\nrestart to ready: {result.get('restart_from_snapshots_s')} s from snapshots, "
          f"{result.get('restart_rebuild_from_database_s')} s rebuilding every index from the database")
    print("| kind | FAISS bytes/vector | service RSS growth bytes/vector | largest gallery in 24 GiB (80 %) | "
          "background index build after ingest s |")
    print("|---|---|---|---|---|")
    for row in result["rows"]:
        print(f"| {row['kind']} | {row['faiss_bytes_per_vector']:.0f} | {row['service_rss_bytes_per_vector']:.0f} | "
              f"{row['largest_gallery_24gib']:,} | {row.get('index_settle_s', '–')} |")
    print("\nsingle queries, base64: QPS with 1 and 2 connections; the upgrade path (v2 query, Procrustes)")
    print("| kind | svc 1 conn p50 / QPS | svc 2 conn p50 / QPS | transformed p50 ms | transform alone µs | "
          "mixed gallery p50 ms |")
    print("|---|---|---|---|---|---|")
    for row in result["rows"]:
        one, two = row["service_single_b64"], row["service_single_b64_2conn"]
        up = (f"{row['service_single_b64_transformed']['p50_ms']:.3f} | {row['transform_only_us']:.0f} | "
              f"{row['service_single_b64_mixed']['p50_ms']:.3f}") if "transform_only_us" in row else "– | – | –"
        print(f"| {row['kind']} | {one['p50_ms']:.3f} / {one['qps']:.0f} | {two['p50_ms']:.3f} / {two['qps']:.0f} | "
              f"{up} |")


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
    parser.add_argument("--ivf-nlist", type=int, default=None, help="IVF lists (default 4·sqrt(n))")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/serving_<n>_<dim>.json")
    parser.add_argument("--no-upgrade", dest="upgrade", action="store_false",
                        help="skip the transformation and mixed-gallery measurements")
    parser.add_argument("--backend", choices=["faiss", "milvus"], default="faiss",
                        help="milvus: nobackfill on Milvus vs raw pymilvus vs nobackfill on FAISS (serving_milvus.py)")
    args = parser.parse_args()
    if args.backend == "milvus":
        from bench.serving_milvus import run

        run(args.n, args.dim, args.queries, args.ef_search, args.out)
        return

    global IVF_NLIST_OVERRIDE
    IVF_NLIST_OVERRIDE = args.ivf_nlist
    if args.out is None:
        size = f"{args.n // 1_000_000}m" if args.n % 1_000_000 == 0 else f"{args.n // 1000}k"
        args.out = RESULTS / f"serving_{size}_{args.dim}.json"
    x, source = gallery_vectors(args.n, args.dim)
    queries = query_vectors(x, args.queries)
    result = {"n": args.n, "dim": args.dim, "k": args.k, "data": source, "service_threads": args.threads,
              "client": "http.client", "waits_for_index_builds": True,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "faiss": faiss.__version__}, "rows": []}
    data_dir = Path(tempfile.mkdtemp(prefix="nobackfill-bench-"))
    args.data_dir = data_dir
    service = Service(data_dir, args.threads)
    try:
        with httpx.Client(base_url=service.url, timeout=300) as client:
            client.post("/v1/models", json={"name": "bench-model", "dim": args.dim}).raise_for_status()
            for kind in args.kinds.split(","):
                result["rows"].append(run_kind(kind, x, queries, args, client, service))
        service.stop()  # clean stop: writes index snapshots
        result["restart_from_snapshots_s"] = round(Service(data_dir, args.threads).stop_after_ready(), 2)
        shutil.rmtree(data_dir / "indexes")
        result["restart_rebuild_from_database_s"] = round(Service(data_dir, args.threads).stop_after_ready(), 2)
    finally:
        service.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
