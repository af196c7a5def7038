"""Ingest throughput by store: the service on SQLite (the embedded default) and on PostgreSQL (the
store replicas share), side by side in one run.

    python -m bench.ingest_store                  # 100k x 384, FAISS flat, 3 interleaved rounds
    python -m bench.ingest_store --n 20000 --rounds 1

Each round starts a fresh `nobackfill serve` per store (PostgreSQL: a fresh database on the
server of bench.common.PG_ADMIN_URL, dropped afterwards) and upserts the same vectors through the
Python client (5,000 items a batch, its default of two in flight) into a flat index, so the
numbers are the write path's (HTTP, validation, the database commit, the index add), not an index
build's. Vectors per second until the last batch is acknowledged; the median over rounds is
reported. Writes bench/results/ingest_store_<n>_<dim>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from bench.common import ROOT, Service, pg_database
from nobackfill.client import Client

RESULTS = ROOT / "bench" / "results"


def ingest_once(store: str, x: np.ndarray, batch: int) -> float:
    """Vectors per second through a fresh service on `store` ("sqlite" or "postgresql")."""
    with ExitStack() as stack:
        env = ({"NOBACKFILL_DATABASE_URL": stack.enter_context(pg_database("nobackfill_bench"))}
               if store == "postgresql" else {})
        service = Service(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nb-ingest-"))), **env)
        stack.callback(service.stop)
        client = stack.enter_context(Client(service.url, timeout=600))
        client.create_model("m", x.shape[1])
        client.create_collection("c", "m", {"kind": "flat"})
        started = time.perf_counter()
        client.upsert_many("c", "m", [str(i) for i in range(len(x))], x, batch_size=batch)
        return len(x) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    x = np.random.default_rng(0).standard_normal((args.n, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    runs: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    for r in range(args.rounds):
        for store in runs:
            runs[store].append(ingest_once(store, x, args.batch))
            print(f"round {r + 1}: {store} {runs[store][-1]:,.0f} vectors/s", flush=True)
    report = {"n": args.n, "dim": args.dim, "batch": args.batch, "index": "flat", "client_in_flight": 2,
              "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
              "vectors_per_s": runs, "median_vectors_per_s": {s: statistics.median(v) for s, v in runs.items()}}
    print("\n| store | ingest vectors/s (median of rounds) | rounds |")
    print("|---|---|---|")
    for store, values in runs.items():
        print(f"| {store} | {statistics.median(values):,.0f} | {' / '.join(f'{v:,.0f}' for v in values)} |")
    out = RESULTS / f"ingest_store_{args.n}_{args.dim}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
