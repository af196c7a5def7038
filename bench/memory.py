"""Where the service's memory goes: the resident set broken into its parts (#19's memory column).

    python -m bench.memory              # 100k x 384 HNSW, bench.peers' workload and parameters
    python -m bench.memory --n 20000    # a quick look

For each configuration (defaults; the hit cache off; the heap trimmer off) it starts `nobackfill
serve` on a fresh data directory and reads the process's resident set: empty; after ingesting n
vectors through the client (batches of 5,000, waiting until searchable, then until the process is
quiet, as bench.peers measures); after 1,000 queries; then after a clean
restart (the index read back from its snapshot at its exact size) and 1,000 queries again. The
snapshot's size stands for the index itself. Prints the breakdown, writes JSON
(bench/results/memory.json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from bench.common import ROOT, LeanClient, Service, b64, wait_quiet
from bench.peers import K, NobackfillSystem
from bench.serving import gallery_vectors

CONFIGS = {"defaults": {}, "hit cache off": {"NOBACKFILL_HIT_CACHE_ITEMS": "0"},
           "heap trim off": {"NOBACKFILL_HEAP_TRIM_IDLE_SECONDS": "0"}}
QUERIES = 1_000


def _query(url: str, vectors: np.ndarray) -> None:
    client = LeanClient(url)
    for q in vectors:
        client.post_json("/v1/collections/bench/query", {"model": "m", "vector_b64": b64(q), "k": K,
                                                          "include_payload": False})


def measure(data_dir: Path, x: np.ndarray, env: dict[str, str]) -> dict[str, int]:
    """Resident bytes of one service at each stage, and its index snapshot's size."""
    system = NobackfillSystem.__new__(NobackfillSystem)  # its setup/ingest, our own Service env
    system.data_dir, system.milvus, system.milvus_proc = data_dir, False, None
    system.service = Service(data_dir / "service", **env)
    row = {"empty": system.service.rss_bytes()}
    system.setup(x.shape[1])
    system.ingest(x)
    wait_quiet([system.service.proc.pid])
    row["after_ingest"] = system.service.rss_bytes()
    _query(system.service.url, x[:QUERIES])
    row["after_queries"] = system.service.rss_bytes()
    system.service.stop()
    row["index_snapshot"] = sum(p.stat().st_size for p in (data_dir / "service" / "indexes").rglob("*.npz"))
    system.service = Service(data_dir / "service", **env)
    row["restarted"] = system.service.rss_bytes()
    _query(system.service.url, x[:QUERIES])
    row["restarted_after_queries"] = system.service.rss_bytes()
    system.service.stop()
    return row


def breakdown(rows: dict[str, dict[str, int]], n: int) -> list[tuple[str, float, float]]:
    """(part, MB, bytes per vector) after ingest with defaults; the other configurations give the
    hit cache's share and what the heap trimmer returned."""
    on, off = rows["defaults"], rows["hit cache off"]
    parts = {
        "empty process": on["empty"],
        "index (snapshot size)": on["index_snapshot"],
        "page cache, ids, the rest (after a restart)": on["restarted"] - on["empty"] - on["index_snapshot"],
        "hit cache records": on["after_ingest"] - off["after_ingest"],
    }
    parts["growth slack after ingest (gone on restart)"] = on["after_ingest"] - sum(parts.values())
    # not a part of the sum: what the trimmer gave back (it would otherwise be in the slack)
    parts["returned to the OS by the heap trimmer"] = rows["heap trim off"]["after_ingest"] - on["after_ingest"]
    return [(name, b / 1e6, b / n if name != "empty process" else float("nan")) for name, b in parts.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "memory.json")
    args = parser.parse_args()
    x, source = gallery_vectors(args.n, 384)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, env) in enumerate(CONFIGS.items()):
            rows[label] = measure(Path(tmp) / str(i), x, env)
            print(label, {k: f"{v / 1e6:.0f} MB" for k, v in rows[label].items()}, flush=True)
    parts = breakdown(rows, args.n)
    print(f"\n{args.n:,} x 384 ({source}), HNSW M 32 / efC 80\n\n| part | MB | bytes/vector |\n|---|---|---|")
    for name, mb, per in parts:
        print(f"| {name} | {mb:.0f} | {'—' if np.isnan(per) else f'{per:,.0f}'} |")
    on = rows["defaults"]
    print(f"| after ingest / after a restart | {on['after_ingest'] / 1e6:.0f} / {on['restarted'] / 1e6:.0f} | "
          f"{(on['after_ingest'] - on['empty']) / args.n:,.0f} / {(on['restarted'] - on['empty']) / args.n:,.0f} |")
    args.out.write_text(json.dumps({"n": args.n, "dim": 384, "data": source, "configs": rows,
                                    "breakdown_mb": {name: mb for name, mb, _ in parts}}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
