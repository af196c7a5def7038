"""nobackfill on Milvus vs raw pymilvus vs nobackfill on FAISS, side by side in one run.

    python -m bench.serving --backend milvus                 # 100k x 384 HNSW (M 32, efC 80, ef 64)
    python -m bench.serving --backend milvus --n 20000       # a quick look

Each Milvus contestant has its own `milvus-lite server` (the local Milvus protocol server, a
separate process): raw `pymilvus.MilvusClient` (dedicated connection), and a `nobackfill serve`
process with NOBACKFILL_INDEX_BACKEND=milvus pointed at the other. A third process is nobackfill on
its embedded FAISS default. The same vectors (bench.serving's gallery), the same index parameters,
k = 10, cosine. Per system, ingest vectors/s measured two ways:
- until searchable: raw inserts 5,000 rows a call, then flushes; the service takes upserts through
  the Python client (5,000 items a batch, its default of two in flight) and is timed until its
  background flush has sealed them;
- until done: until the system's processes (server, service) go quiet (under 5 % of a core for 2 s).
  Milvus Lite answers a flush before it has built the sealed segments' HNSW and brute-forces them
  meanwhile, so raw pymilvus' "searchable" leaves its whole index build for after the clock
  stops, while the service, sealing every 2 s during the ingest, pays for most of its builds
  inside it. Only "done" compares the same work; both are reported.
A shared server (this bench before 2026-12-07) let raw pymilvus' deferred index build run on into
the next contestant's ingest. Then single-query p50/p99 over one keep-alive connection, QPS with 4
concurrent clients, recall@10 against exact search, and for nobackfill the restart time to /readyz
(no rebuild from the database). Every phase starts once all processes are quiet; query timings are
interleaved in rounds (raw, nobackfill-milvus, nobackfill-faiss, repeated) so that load changes hit
all three alike. Writes bench/results/serving_milvus_<n>_<dim>.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import (
    ROOT,
    LeanClient,
    Service,
    b64,
    free_port,
    stop_process,
    tree_cpu_seconds,
    wait_for_index,
    wait_quiet,
)
from index.milvus.backend import GRPC_OPTIONS
from nobackfill.client import Client

RESULTS = ROOT / "bench" / "results"
ROUNDS = 3


def start_milvus_server(data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("milvus-lite")
    proc = subprocess.Popen([str(exe), "server", "--data-dir", str(data_dir), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    from pymilvus import MilvusClient

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            MilvusClient(uri=uri, dedicated=True, timeout=2, grpc_options=GRPC_OPTIONS).list_collections()
            return proc, uri
        except Exception:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("milvus-lite server did not start")


def percentiles(samples: list[float]) -> dict:
    ms = np.array(samples) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def recall_at_10(got: list[list[int]], want: np.ndarray) -> float:
    return float(np.mean([len(set(g[:10]) & set(w[:10].tolist())) / 10 for g, w in zip(got, want, strict=True)]))


class Contestant:
    """What the run measures every system by: its processes by role (the client runs in this
    process and is not counted), and stopping them."""

    name: str

    def roles(self) -> dict[str, int]:
        raise NotImplementedError

    def pids(self) -> list[int]:
        return list(self.roles().values())

    def stop(self) -> None:
        raise NotImplementedError


class RawMilvus(Contestant):
    name = "pymilvus (raw)"

    def __init__(self, data_dir: Path, dim: int, ef: int) -> None:
        from pymilvus import DataType, MilvusClient

        self.server, uri = start_milvus_server(data_dir)
        self.uri, self.ef = uri, ef
        try:  # a failure here must not leave the server running
            self.client = MilvusClient(uri=uri, dedicated=True, grpc_options=GRPC_OPTIONS)
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            index = self.client.prepare_index_params()
            index.add_index(field_name="vector", index_type="HNSW", metric_type="COSINE",
                            params={"params": {"M": 32, "efConstruction": 80}})
            self.client.create_collection("raw_bench", schema=schema, index_params=index,
                                          consistency_level="Strong")
        except BaseException:
            stop_process(self.server)
            raise

    def ingest(self, x: np.ndarray, batch: int = 5_000) -> None:
        for start in range(0, len(x), batch):
            rows = [{"id": start + i, "vector": v} for i, v in enumerate(x[start:start + batch])]
            self.client.insert("raw_bench", rows)
        self.client.flush("raw_bench")  # sealed: Milvus Lite brute-forces unflushed rows

    def roles(self) -> dict[str, int]:
        return {"milvus server": self.server.pid}

    def stop(self) -> None:
        stop_process(self.server)

    def searcher(self):
        from pymilvus import MilvusClient

        client = MilvusClient(uri=self.uri, dedicated=True, grpc_options=GRPC_OPTIONS)

        def search(q: np.ndarray) -> list[int]:
            hits = client.search("raw_bench", data=[q], limit=10, search_params={"params": {"ef": self.ef}},
                                 output_fields=["id"])[0]
            return [h["id"] for h in hits]

        return search


class Nobackfill(Contestant):
    def __init__(self, name: str, data_dir: Path, ef: int, milvus: bool) -> None:
        self.name, self.data_dir, self.ef = name, data_dir, ef
        self.server, self.env = None, {}
        if milvus:
            self.server, uri = start_milvus_server(data_dir / "milvus-server")
            self.env = {"NOBACKFILL_INDEX_BACKEND": "milvus", "NOBACKFILL_MILVUS_URI": uri,
                        "NOBACKFILL_MILVUS_PREFIX": "nb_"}
        try:
            self.service = Service(data_dir / "service", **self.env)
        except BaseException:
            if self.server:
                stop_process(self.server)
            raise

    def roles(self) -> dict[str, int]:
        return {"service": self.service.proc.pid, **({"milvus server": self.server.pid} if self.server else {})}

    def stop(self) -> None:
        self.service.stop()
        if self.server:
            stop_process(self.server)

    def setup(self, dim: int) -> None:
        with httpx.Client(base_url=self.service.url, timeout=600) as c:
            c.post("/v1/models", json={"name": "bench-model", "dim": dim}).raise_for_status()
            c.post("/v1/collections", json={"name": "bench", "model": "bench-model",
                                            "index": {"kind": "hnsw", "hnsw_m": 32, "hnsw_ef_construction": 80,
                                                      "hnsw_ef_search": self.ef}}).raise_for_status()

    def ingest(self, x: np.ndarray, batch: int = 5_000) -> None:
        """Through the Python client, as an application ingests: its default of two batches in flight."""
        with Client(self.service.url, timeout=600) as client:
            client.upsert_many("bench", "bench-model", [str(i) for i in range(len(x))], x, batch_size=batch)
            wait_for_index(client.http, "bench")  # the service flushes written partitions in the background

    def searcher(self):
        client = LeanClient(self.service.url)

        def search(q: np.ndarray) -> list[int]:
            body = json.loads(client.post_json("/v1/collections/bench/query", {
                "model": "bench-model", "vector_b64": b64(q), "k": 10, "include_payload": False}))
            return [int(h["id"]) for h in body["hits"]]

        return search

    def restart_seconds(self) -> float:
        self.service.stop()
        self.service = Service(self.data_dir / "service", **self.env)
        return self.service.ready_seconds


def qps(make_search, queries: np.ndarray, clients: int = 4) -> float:
    """Queries per second with `clients` threads, each with its own searcher from `make_search()`."""
    parts = [queries[i::clients] for i in range(clients)]
    searchers = [make_search() for _ in range(clients)]
    threads = [threading.Thread(target=lambda s=s, p=p: [s(q) for q in p])
               for s, p in zip(searchers, parts, strict=True)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(queries) / (time.perf_counter() - started)


def run(n: int, dim: int, n_queries: int, ef: int, out: Path | None) -> dict:
    from bench.serving import gallery_vectors, query_vectors

    x, source = gallery_vectors(n, dim)
    queries = query_vectors(x, n_queries)
    exact = np.argsort(-(queries @ x.T), axis=1)[:, :10]
    tmp = Path(tempfile.mkdtemp(prefix="nb-milvus-bench-"))
    systems: list[Contestant] = []
    try:
        raw = RawMilvus(tmp / "raw", dim, ef)
        systems.append(raw)
        on_milvus = Nobackfill("nobackfill on Milvus", tmp / "nb-milvus", ef, milvus=True)
        systems.append(on_milvus)
        on_faiss = Nobackfill("nobackfill on FAISS", tmp / "nb-faiss", ef, milvus=False)
        systems.append(on_faiss)
        every_pid = [pid for s in systems for pid in s.pids()]
        results = {s.name: {} for s in systems}
        for s in systems:
            if isinstance(s, Nobackfill):
                s.setup(dim)
            wait_quiet(every_pid)
            cpu_before = {pid: tree_cpu_seconds(pid) for pid in s.pids()}
            started = time.perf_counter()
            s.ingest(x)
            search = s.searcher()
            search(queries[0])  # searchable
            searchable = time.perf_counter() - started
            done = wait_quiet(s.pids()) - started
            cpu = {role: tree_cpu_seconds(pid) - cpu_before[pid] for role, pid in s.roles().items()}
            results[s.name].update({
                "ingest_vectors_per_s": n / searchable, "ingest_done_vectors_per_s": n / done,
                "ingest_cpu_seconds": sum(cpu.values()), "ingest_cpu_seconds_by_process": cpu})
            print(f"{s.name}: ingested {n} searchable in {searchable:.1f} s, done in {done:.1f} s; CPU-s "
                  + ", ".join(f"{role} {seconds:.1f}" for role, seconds in cpu.items()), flush=True)
        wait_quiet(every_pid)
        searchers = {s.name: s.searcher() for s in systems}
        samples: dict[str, list[float]] = {s.name: [] for s in systems}
        got: dict[str, list[list[int]]] = {s.name: [] for s in systems}
        for search in searchers.values():  # warm-up
            for q in queries[:20]:
                search(q)
        for r in range(ROUNDS):
            for name, search in searchers.items():
                for i in range(r, len(queries), ROUNDS):
                    t0 = time.perf_counter()
                    ids = search(queries[i])
                    samples[name].append(time.perf_counter() - t0)
                    got[name].append((i, ids))  # the rounds split the queries: each once per system
        for s in systems:
            ordered = [ids for _, ids in sorted(got[s.name])]
            results[s.name].update(percentiles(samples[s.name]))
            results[s.name]["recall_at_10"] = recall_at_10(ordered, exact)
            results[s.name]["qps_4_clients"] = qps(s.searcher, queries, 4)
        results[on_milvus.name]["restart_to_ready_s"] = on_milvus.restart_seconds()
        results[on_faiss.name]["restart_to_ready_s"] = on_faiss.restart_seconds()
    finally:
        for s in systems:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    raw_p50 = results[raw.name]["p50_ms"]
    mil = results[on_milvus.name]
    summary = {"service_overhead_p50_ms": mil["p50_ms"] - raw_p50,
               "service_p50_over_raw": mil["p50_ms"] / raw_p50,
               "ingest_vs_raw": mil["ingest_vectors_per_s"] / results[raw.name]["ingest_vectors_per_s"],
               "ingest_done_vs_raw": mil["ingest_done_vectors_per_s"] / results[raw.name]["ingest_done_vectors_per_s"]}
    report = {"n": n, "dim": dim, "queries": n_queries, "k": 10, "ef_search": ef,
              "hnsw": {"M": 32, "efConstruction": 80},
              "data": source, "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "systems": results,
              "summary": summary}
    print("\n| system | ingest vec/s: searchable / done | ingest CPU-s | p50 / p99 ms | QPS (4 clients) | recall@10 "
          "| restart to ready |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        restart = f"{r['restart_to_ready_s']:.1f} s" if "restart_to_ready_s" in r else "—"
        print(f"| {name} | {r['ingest_vectors_per_s']:,.0f} / {r['ingest_done_vectors_per_s']:,.0f} | "
              f"{r['ingest_cpu_seconds']:.0f} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | "
              f"{r['qps_4_clients']:,.0f} | {r['recall_at_10']:.4f} | {restart} |")
    print(f"\nservice over raw pymilvus: +{summary['service_overhead_p50_ms']:.2f} ms p50 "
          f"({summary['service_p50_over_raw']:.2f}x); ingest at {summary['ingest_vs_raw']:.0%} of raw until "
          f"searchable, {summary['ingest_done_vs_raw']:.0%} until done")
    out = out or RESULTS / f"serving_milvus_{n}_{dim}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    return report
