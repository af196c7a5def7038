"""The serving tables of docs/benchmarks.md, from the benchmark's JSON files (they show exactly what ran).

    python -m bench.report                        # every bench/results/serving_*.json

Prints two markdown tables: latency against in-process FAISS (with the "1 ms + 1.2x FAISS" goal
checked per row) and throughput / upgrade path / ingest / memory. Rows come from whichever runs
are on disk, largest last; each row names the client that timed it (older runs used httpx, whose
own per-request cost is ~0.27 ms on this machine; see bench/common.LeanClient).
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load_results(directory: Path = RESULTS) -> dict[str, dict]:
    """Every serving run on disk, by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(directory.glob("serving_*.json"))}


def load_rows(results: dict[str, dict]) -> list[dict]:
    rows = []
    for name, result in results.items():
        for row in result["rows"]:
            rows.append({**row, "n": result["n"], "dim": result["dim"], "file": name,
                         "client": result.get("client", "httpx"),
                         "settled": result.get("waits_for_index_builds", False),
                         })
    order = {"flat": 0, "hnsw": 1, "ivf": 2}
    return sorted(rows, key=lambda r: (r["n"], r["dim"], order.get(r["kind"], 9)))


def gallery(row: dict) -> str:
    n = f"{row['n'] // 1_000_000}M" if row["n"] >= 1_000_000 else f"{row['n'] // 1000}k"
    return f"{n} × {row['dim']}"


def pm(cell: dict) -> str:
    return f"{cell['p50_ms']:.2f} / {cell['p99_ms']:.2f}"


def table_start(*columns: str) -> list[str]:
    head = "| " + " | ".join(columns) + " |"
    return [head, "|" + "---|" * len(columns)]


def latency_table(rows: list[dict]) -> str:
    lines = table_start("gallery", "kind", "client", "FAISS 1q, 1 thread", "FAISS 1q, 2 threads", "service 1q JSON",
                        "service 1q base64", "FAISS 32q", "service 32q JSON", "service 32q base64",
                        "service/FAISS p50 (1q base64)", "within 1 ms + 1.2× (limit)")
    for r in rows:
        ref = r["faiss_single_t1"]["p50_ms"]
        limit = 1.0 + 1.2 * ref
        svc = r["service_single_b64"]["p50_ms"]
        kind = r["kind"] + (f" ({r['ivf_nlist']:,} lists)" if r.get("ivf_nlist") else "")
        lines.append(
            f"| {gallery(r)} | {kind} | {r['client']} | {pm(r['faiss_single_t1'])} | {pm(r['faiss_single_t2'])} | "
            f"{pm(r['service_single_json'])} | {pm(r['service_single_b64'])} | {pm(r['faiss_batch32_t1'])} | "
            f"{pm(r['service_batch32_json'])} | {pm(r['service_batch32_b64'])} | "
            f"{svc / ref:.2f}× ({svc - ref:+.2f} ms) | {'yes' if svc <= limit else 'no'} ({limit:.2f}) |")
    return "\n".join(lines)


def throughput_table(rows: list[dict]) -> str:
    lines = table_start("gallery", "kind", "1 conn p50 ms / QPS", "2 conn p50 ms / QPS",
                        "v2 query, transformed, p50 ms", "transformation alone", "mixed gallery p50 ms",
                        "ingest vec/s", "background index build s", "FAISS / service RSS bytes per vector",
                        "largest gallery in 80 % of 24 GiB")
    for r in rows:
        one, two = r["service_single_b64"], r["service_single_b64_2conn"]
        up = (f"{r['service_single_b64_transformed']['p50_ms']:.2f} | {r['transform_only_us']:.0f} µs | "
              f"{r['service_single_b64_mixed']['p50_ms']:.2f}") if "transform_only_us" in r else "– | – | –"
        settle = f"{r['index_settle_s']:.1f}" if "index_settle_s" in r else "not waited"
        lines.append(
            f"| {gallery(r)} | {r['kind']} | {one['p50_ms']:.2f} / {one['qps']:,.0f} | "
            f"{two['p50_ms']:.2f} / {two['qps']:,.0f} | {up} | {r['ingest_vectors_per_s']:,.0f} | {settle} | "
            f"{r['faiss_bytes_per_vector']:.0f} / {r['service_rss_bytes_per_vector']:.0f} | "
            f"{r['largest_gallery_24gib'] / 1e6:.1f}M |")
    return "\n".join(lines)


def restart_lines(results: dict[str, dict]) -> str:
    out = []
    for name, result in results.items():
        kinds = "+".join(r["kind"] for r in result["rows"])
        out.append(f"- {name} ({kinds}): {result.get('restart_from_snapshots_s')} s from snapshots, "
                   f"{result.get('restart_rebuild_from_database_s')} s rebuilding every index from the database")
    return "\n".join(out)


def main() -> None:
    results = load_results()
    rows = load_rows(results)
    print(latency_table(rows))
    print()
    print(throughput_table(rows))
    print()
    print(restart_lines(results))


if __name__ == "__main__":
    main()
