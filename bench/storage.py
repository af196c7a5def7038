"""Bytes per vector on each side when Milvus holds the vectors: PostgreSQL rows vs Milvus Lite.

    python -m bench.storage                  # 20k x 384 through the service (PostgreSQL + Milvus Lite)
    python -m bench.storage --n 50000 --dim 768

Starts `nobackfill serve` on a fresh PostgreSQL database (on bench.common.PG_ADMIN_URL's server)
with the Milvus backend (embedded Milvus Lite under a temp dir),
ingests `n` vectors over HTTP, stops the service cleanly, then reads PostgreSQL's relation sizes
(`pg_total_relation_size`: heap + TOAST + indexes) and the Milvus Lite data directory's size on
disk. Milvus Lite's disk layout is not a Milvus cluster's memory (docs/scale.md has that
arithmetic); the PostgreSQL numbers are what any deployment pays.
Writes bench/results/storage_<n>_<dim>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from bench.common import ROOT, Service, b64, pg_database, wait_for_index

RESULTS = ROOT / "bench" / "results"


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    from bench.serving import gallery_vectors

    x, source = gallery_vectors(args.n, args.dim)
    tmp = Path(tempfile.mkdtemp(prefix="nb-storage-"))
    try:
        with pg_database("nobackfill_storage") as url:
            service = Service(tmp / "data", NOBACKFILL_DATABASE_URL=url, NOBACKFILL_INDEX_BACKEND="milvus")
            try:
                with httpx.Client(base_url=service.url, timeout=600) as c:
                    c.post("/v1/models", json={"name": "m", "dim": args.dim}).raise_for_status()
                    c.post("/v1/collections", json={"name": "g", "model": "m",
                                                    "index": {"kind": "hnsw"}}).raise_for_status()
                    for start in range(0, args.n, 5_000):
                        items = [{"id": f"item-{start + i}", "vector_b64": b64(v)}
                                 for i, v in enumerate(x[start:start + 5_000])]
                        c.post("/v1/collections/g/items", json={"model": "m", "items": items}).raise_for_status()
                    wait_for_index(c, "g")
            finally:
                service.stop()
            db = create_engine(url)
            with db.connect() as conn:
                tables = {t: int(conn.execute(text(f"select pg_total_relation_size('{t}')")).scalar())
                          for t in ("items", "item_history")}
            db.dispose()
        milvus = directory_bytes(tmp / "data" / "milvus.db")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raw = 4 * args.dim
    report = {"n": args.n, "dim": args.dim, "data": source, "raw_vector_bytes": raw,
              "postgresql_items_bytes_per_vector": tables["items"] / args.n,
              "milvus_lite_disk_bytes_per_vector": milvus / args.n, "relations": tables,
              "milvus_lite_bytes": milvus}
    print(f"| {args.n:,} × {args.dim} | raw vector {raw:,} B | PostgreSQL items (heap+TOAST+indexes) "
          f"{report['postgresql_items_bytes_per_vector']:,.0f} B/vector | Milvus Lite on disk "
          f"{report['milvus_lite_disk_bytes_per_vector']:,.0f} B/vector |")
    out = RESULTS / f"storage_{args.n}_{args.dim}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
