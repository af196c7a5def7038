"""nobackfill against the servers users would pick instead, side by side in one run.

    pip install -e '.[peers]'                  # Chroma's server and client, pinned
    python -m bench.peers                      # 100k x 384, HNSW M 32 / efC 80 / efS 64, k = 10
    python -m bench.peers --n 20000 --queries 300   # a quick look

Systems, each in its own processes and data directory: nobackfill on its embedded FAISS default,
nobackfill on its Milvus backend (with its own `milvus-lite server`), Chroma (`chroma run`,
`chromadb.HttpClient`) and Milvus Lite (`milvus-lite server`, `pymilvus.MilvusClient`, dedicated
connection: the cached one's keepalive pings draw GOAWAY from the Lite server). The same vectors
(WordNet-20k MiniLM tiled with noise, bench.serving's gallery), the same HNSW parameters set
explicitly everywhere (Chroma's defaults are M 16 / ef 100), cosine, k = 10.

Per system: ingest vectors/s (inserts in batches of 5,000 through each system's own client
library) measured three ways: until searchable (a query sees every vector: nobackfill waits for
its background index flush, Milvus flushes), until indexed (Milvus: describe_index reports no
pending rows; the others index as they write) and until quiet (the system's processes use under
5 % of a core for 2 s: Milvus Lite keeps building and compacting segments for a while after the
flush, and its queries compete with that work); single-query p50/p99 over one connection, in rounds that interleave the
systems so that load changes hit all alike; QPS with 4 client threads; recall@10 against exact
search; server memory (resident set of the system's whole process tree) empty and after ingest,
so bytes per vector; restart to the first full query (every process of the system stopped and
started again, timed until a query returns k hits; three restarts per system, interleaved, the
median reported). nobackfill's queries are timed through two
clients: http.client with base64 vectors (what the service costs) and its own Python client
(what a user of the library sees); each peer through its own library.

Before each timed phase the run waits for the 1-minute load average to fall under --max-load
(at most --settle-s seconds) and records the load it started at. Prints a table, writes JSON
(bench/results/peers.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from bench.common import ROOT, LeanClient, Service, b64, free_port, stop_process, wait_for_index, wait_quiet
from bench.serving_milvus import percentiles, qps, recall_at_10, start_milvus_server
from index.milvus.backend import GRPC_OPTIONS
from nobackfill.client import Client

RESULTS = ROOT / "bench" / "results"
HNSW = {"M": 32, "ef_construction": 80, "ef_search": 64}
K = 10
BATCH = 5_000
ROUNDS = 3
RESTARTS = 3
Search = Callable[[np.ndarray], list[int]]


# ---- measuring helpers --------------------------------------------------------------------------
def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (Linux /proc)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total


def settle(max_load: float, max_wait: float) -> float:
    """Wait (bounded) for the 1-minute load average to fall under max_load; return the load then."""
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        time.sleep(2)
    return round(os.getloadavg()[0], 2)


def first_full_query(search: Search, query: np.ndarray, timeout: float = 600) -> None:
    """Block until a query returns k hits (a restarted system may answer fewer, or fail, at first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(search(query)) == K:
                return
        except Exception:  # noqa: BLE001 -- any failure while starting up means "not yet"
            pass
        time.sleep(0.05)
    raise TimeoutError("no full query result after restart")


def wait_milvus_indexed(uri: str, rows: int, timeout: float = 1_800) -> None:
    """Block until every index on a Milvus server has indexed `rows` rows with none pending.

    A flush makes rows searchable, but Milvus Lite builds the HNSW of sealed segments in the
    background and brute-forces them meanwhile (at ~90 % of a core): "searchable" is not "indexed"."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, dedicated=True, grpc_options=GRPC_OPTIONS)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [client.describe_index(c, i) for c in client.list_collections() for i in client.list_indexes(c)]
        if states and all(int(st.get("pending_index_rows", 0)) == 0 for st in states) \
                and sum(int(st.get("indexed_rows", 0)) for st in states) >= rows:
            return
        time.sleep(0.2)
    raise TimeoutError(f"Milvus at {uri} still indexing after {timeout} s")


# ---- the systems --------------------------------------------------------------------------------
class System:
    """One contestant: its processes, its client libraries, and the operations every one is timed on."""

    name: str

    def pids(self) -> list[int]:
        raise NotImplementedError

    def setup(self, dim: int) -> None:
        raise NotImplementedError

    def ingest(self, x: np.ndarray) -> None:
        """Write every vector and return once they are searchable through the index."""
        raise NotImplementedError

    def searchers(self) -> dict[str, Callable[[], Search]]:
        """Client name -> a factory of single-query search functions (one connection each)."""
        raise NotImplementedError

    def wait_indexed(self, rows: int) -> None:
        """Block until the index structure covers every row (no-op where searchable means indexed)."""

    def stop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def rss_bytes(self) -> int:
        return sum(tree_rss_bytes(pid) for pid in self.pids())


class NobackfillSystem(System):
    def __init__(self, name: str, data_dir: Path, milvus: bool) -> None:
        self.name, self.data_dir, self.milvus = name, data_dir, milvus
        self.milvus_proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        env = {}
        if self.milvus:
            self.milvus_proc, self.milvus_uri = start_milvus_server(self.data_dir / "milvus-server")
            env = {"NOBACKFILL_INDEX_BACKEND": "milvus", "NOBACKFILL_MILVUS_URI": self.milvus_uri}
        self.service = Service(self.data_dir / "service", **env)

    def wait_indexed(self, rows: int) -> None:
        if self.milvus:
            wait_milvus_indexed(self.milvus_uri, rows)

    def stop(self) -> None:
        self.service.stop()
        if self.milvus_proc is not None:
            stop_process(self.milvus_proc)

    def pids(self) -> list[int]:
        return [self.service.proc.pid] + ([self.milvus_proc.pid] if self.milvus_proc else [])

    def setup(self, dim: int) -> None:
        with Client(self.service.url, timeout=600) as nb:
            nb.create_model("m", dim)
            nb.create_collection("bench", "m", index={"kind": "hnsw", "hnsw_m": HNSW["M"],
                                                      "hnsw_ef_construction": HNSW["ef_construction"],
                                                      "hnsw_ef_search": HNSW["ef_search"]})

    def ingest(self, x: np.ndarray) -> None:
        with Client(self.service.url, timeout=600) as nb:
            nb.upsert_many("bench", "m", [str(i) for i in range(len(x))], x, batch_size=BATCH)
            wait_for_index(nb.http, "bench")

    def searchers(self) -> dict[str, Callable[[], Search]]:
        url = self.service.url

        def lean() -> Search:
            client = LeanClient(url)

            def search(q: np.ndarray) -> list[int]:
                body = json.loads(client.post_json("/v1/collections/bench/query", {
                    "model": "m", "vector_b64": b64(q), "k": K, "include_payload": False}))
                return [int(h["id"]) for h in body["hits"]]

            return search

        def library() -> Search:
            nb = Client(url, timeout=60)
            return lambda q: [int(i) for i in nb.query("bench", "m", q, k=K, include_payload=False).ids[0]]

        return {"http.client": lean, "nobackfill.Client": library}


class ChromaSystem(System):
    def __init__(self, data_dir: Path) -> None:
        import chromadb

        self.name = f"Chroma {chromadb.__version__}"
        self.data_dir, self.port = data_dir, free_port()
        self.start()

    def start(self) -> None:
        exe = Path(sys.executable).with_name("chroma")
        self.proc = subprocess.Popen([str(exe), "run", "--path", str(self.data_dir), "--host", "127.0.0.1",
                                      "--port", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/api/v2/heartbeat", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("chroma run did not start")

    def stop(self) -> None:
        stop_process(self.proc)

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def _collection(self):
        import chromadb

        return chromadb.HttpClient(host="127.0.0.1", port=self.port).get_collection("bench")

    def setup(self, dim: int) -> None:
        import chromadb

        chromadb.HttpClient(host="127.0.0.1", port=self.port).create_collection(
            "bench", embedding_function=None,
            configuration={"hnsw": {"space": "cosine", "max_neighbors": HNSW["M"],
                                    "ef_construction": HNSW["ef_construction"], "ef_search": HNSW["ef_search"]}})

    def ingest(self, x: np.ndarray) -> None:
        collection = self._collection()
        for lo in range(0, len(x), BATCH):
            collection.add(ids=[str(i) for i in range(lo, min(lo + BATCH, len(x)))], embeddings=x[lo:lo + BATCH])

    def searchers(self) -> dict[str, Callable[[], Search]]:
        def library() -> Search:
            collection = self._collection()
            return lambda q: [int(i) for i in collection.query(query_embeddings=q[None, :], n_results=K,
                                                                include=[])["ids"][0]]

        return {"chromadb.HttpClient": library}


class MilvusLiteSystem(System):
    name = "Milvus Lite server"

    def __init__(self, data_dir: Path) -> None:
        from importlib.metadata import version

        self.name = f"Milvus Lite {version('milvus-lite')}"
        self.data_dir = data_dir
        self.start()

    def start(self) -> None:
        self.proc, self.uri = start_milvus_server(self.data_dir)

    def stop(self) -> None:
        stop_process(self.proc)

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def _client(self):
        from pymilvus import MilvusClient

        return MilvusClient(uri=self.uri, dedicated=True, grpc_options=GRPC_OPTIONS)

    def setup(self, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        client = self._client()
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="HNSW", metric_type="COSINE",
                        params={"params": {"M": HNSW["M"], "efConstruction": HNSW["ef_construction"]}})
        client.create_collection("bench", schema=schema, index_params=index, consistency_level="Strong")

    def ingest(self, x: np.ndarray) -> None:
        client = self._client()
        for lo in range(0, len(x), BATCH):
            client.insert("bench", [{"id": lo + i, "vector": v} for i, v in enumerate(x[lo:lo + BATCH])])
        client.flush("bench")  # sealed: searchable (Milvus Lite brute-forces unflushed rows)

    def wait_indexed(self, rows: int) -> None:
        wait_milvus_indexed(self.uri, rows)

    def searchers(self) -> dict[str, Callable[[], Search]]:
        def library() -> Search:
            client = self._client()
            client.load_collection("bench")  # a no-op when loaded; needed after a restart
            params = {"params": {"ef": HNSW["ef_search"]}}
            return lambda q: [h["id"] for h in client.search("bench", data=[q], limit=K, search_params=params,
                                                             output_fields=["id"])[0]]

        return {"pymilvus": library}


# ---- the run ------------------------------------------------------------------------------------
def run(n: int, n_queries: int, max_load: float, settle_s: float, out: Path) -> dict:
    from bench.serving import gallery_vectors, query_vectors

    x, source = gallery_vectors(n, 384)
    queries = query_vectors(x, n_queries)
    exact = np.argsort(-(queries @ x.T), axis=1)[:, :K]
    tmp = Path(tempfile.mkdtemp(prefix="nb-peers-"))
    systems: list[System] = []
    report: dict = {"n": n, "dim": 384, "queries": n_queries, "k": K, "hnsw": HNSW, "metric": "cosine",
                    "data": source, "cpu_count": os.cpu_count(), "batch": BATCH, "systems": {}}
    try:
        systems = [NobackfillSystem("nobackfill (FAISS)", tmp / "nb-faiss", milvus=False),
                   NobackfillSystem("nobackfill (Milvus backend)", tmp / "nb-milvus", milvus=True),
                   ChromaSystem(tmp / "chroma"), MilvusLiteSystem(tmp / "milvus")]
        rows = {s.name: {"clients": {}} for s in systems}
        for s in systems:
            s.setup(x.shape[1])
            rows[s.name]["rss_empty_bytes"] = s.rss_bytes()
            rows[s.name]["load_before_ingest"] = settle(max_load, settle_s)
            started = time.perf_counter()
            s.ingest(x)
            first_full_query(next(iter(s.searchers().values()))(), queries[0])
            rows[s.name]["ingest_vectors_per_s"] = n / (time.perf_counter() - started)
            s.wait_indexed(n)
            rows[s.name]["ingest_indexed_vectors_per_s"] = n / (time.perf_counter() - started)
            rows[s.name]["ingest_quiet_vectors_per_s"] = n / (wait_quiet(s.pids()) - started)
            rows[s.name]["rss_after_ingest_bytes"] = s.rss_bytes()
            print(f"{s.name}: {n:,} vectors searchable in {n / rows[s.name]['ingest_vectors_per_s']:.1f} s, "
                  f"indexed in {n / rows[s.name]['ingest_indexed_vectors_per_s']:.1f} s, "
                  f"quiet after {n / rows[s.name]['ingest_quiet_vectors_per_s']:.1f} s", flush=True)

        # Single-query latency: every (system, client) searcher, interleaved in rounds.
        searchers = {(s.name, c): make() for s in systems for c, make in s.searchers().items()}
        for search in searchers.values():
            for q in queries[:20]:
                search(q)
        samples = {key: [] for key in searchers}
        got = {key: [] for key in searchers}
        report["load_before_latency"] = settle(max_load, settle_s)
        for r in range(ROUNDS):
            for key, search in searchers.items():
                for i in range(r, len(queries), ROUNDS):
                    t0 = time.perf_counter()
                    ids = search(queries[i])
                    samples[key].append(time.perf_counter() - t0)
                    got[key].append((i, ids))
        for s in systems:
            for client, make in s.searchers().items():
                key = (s.name, client)
                row = {**percentiles(samples[key]),
                       "recall_at_10": recall_at_10([ids for _, ids in sorted(got[key])], exact)}
                row["load_before_qps"] = settle(max_load, settle_s)
                row["qps_4_clients"] = qps(make, queries)
                rows[s.name]["clients"][client] = row
        for r in range(RESTARTS):  # one restart is one noisy sample: interleave the systems, report the median
            for s in systems:
                rows[s.name].setdefault("load_before_restart", []).append(settle(max_load, settle_s))
                s.stop()
                started = time.perf_counter()
                s.start()
                first_full_query(next(iter(s.searchers().values()))(), queries[0])
                rows[s.name].setdefault("restarts_s", []).append(time.perf_counter() - started)
                print(f"{s.name}: restart {r + 1}/{RESTARTS} to a full query in {rows[s.name]['restarts_s'][-1]:.2f} s",
                      flush=True)
        for row in rows.values():
            row["restart_to_first_full_query_s"] = float(np.median(row["restarts_s"]))
        for row in rows.values():
            row["bytes_per_vector"] = (row["rss_after_ingest_bytes"] - row["rss_empty_bytes"]) / n
        report["systems"] = rows
    finally:
        for s in systems:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    return report


def print_table(report: dict) -> None:
    print(f"\n{report['n']:,} x {report['dim']} ({report['data']}), HNSW M {HNSW['M']} / "
          f"efC {HNSW['ef_construction']} / efS {HNSW['ef_search']}, k = {K}; "
          f"load average before latency {report['load_before_latency']}")
    print("\n| system | client | ingest vec/s: searchable / indexed / quiet | p50 / p99 ms | QPS, 4 threads "
          "| recall@10 | RSS after ingest | bytes/vector | restart to full query |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in report["systems"].items():
        shared = (f"{row['ingest_vectors_per_s']:,.0f} / {row['ingest_indexed_vectors_per_s']:,.0f} / "
                  f"{row['ingest_quiet_vectors_per_s']:,.0f}",
                  f"{row['rss_after_ingest_bytes'] / 2**20:,.0f} MB", f"{row['bytes_per_vector']:,.0f}",
                  f"{row['restart_to_first_full_query_s']:.2f} s")
        for i, (client, c) in enumerate(row["clients"].items()):
            cells = shared if i == 0 else ("″",) * 4
            print(f"| {name} | {client} | {cells[0]} | {c['p50_ms']:.2f} / {c['p99_ms']:.2f} | "
                  f"{c['qps_4_clients']:,.0f} | {c['recall_at_10']:.4f} | {cells[1]} | {cells[2]} | {cells[3]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--max-load", type=float, default=1.0,
                        help="wait for the 1-min load average to fall under this")
    parser.add_argument("--settle-s", type=float, default=60.0, help="longest wait for the load to fall, per phase")
    parser.add_argument("--out", type=Path, default=RESULTS / "peers.json")
    args = parser.parse_args()
    run(args.n, args.queries, args.max_load, args.settle_s, args.out)


if __name__ == "__main__":
    main()
