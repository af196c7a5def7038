"""Soak: queries, writes, upgrade cycles and backfill at once, for a bounded time, on loopback.

    python -m bench.soak --minutes 20

One `nobackfill serve` (SQLite + FAISS, the embedded default) holds a gallery of N items. At once:
- two query threads send k=10 queries in a random live model version (old and new clients);
- a writer rewrites 20 random items every 50 ms in the newest active version, and deletes and
  re-adds a few (the gallery keeps its size, so memory should not grow with data);
- an upgrade driver runs cycle after cycle: register the next version, upload 2,000 pairs, train
  (a durable job), activate, re-embed the whole gallery into it in batches (backfill), then retire
  the old version.
Every 10 s it records the server's RSS and the error counts. The report shows RSS per minute; the
reading is whether RSS stops growing once the caches (hit cache, routing, snapshots) are full.
Prints a table, writes JSON (bench/results/soak.json by default).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from bench.common import ROOT, Service, b64, wait_for_job

DIM = 64


class World:
    """Items have a latent vector; model version k embeds it as latent @ R_k (+ noise)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.latent = self.rng.normal(size=(n, DIM)).astype(np.float32)
        self.maps: dict[str, np.ndarray] = {}
        self.lock = threading.Lock()
        self.live_models: list[str] = []  # versions clients may query with
        self.write_model = "v1"  # the version writers embed in

    def embed(self, model: str, rows: np.ndarray) -> np.ndarray:
        if model not in self.maps:
            rot, _ = np.linalg.qr(np.random.default_rng(len(self.maps) + 1).normal(size=(DIM, DIM)))
            self.maps[model] = rot.astype(np.float32)
        noise = np.random.default_rng().normal(scale=0.05, size=(len(rows), DIM)).astype(np.float32)
        return self.latent[rows] @ self.maps[model] + noise


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.latencies: list[float] = []

    def add(self, kind: str, status: int | str, seconds: float | None = None) -> None:
        with self.lock:
            self.counts[f"{kind} {status}"] += 1
            if seconds is not None:
                self.latencies.append(seconds)

    def take(self) -> tuple[Counter[str], list[float]]:
        with self.lock:
            counts, lat = self.counts, self.latencies
            self.counts, self.latencies = Counter(), []
            return counts, lat


def query_loop(url: str, world: World, stats: Stats, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            with world.lock:
                model = rng.choice(world.live_models)
            q = world.embed(model, np.array([rng.randrange(len(world.latent))]))
            started = time.perf_counter()
            try:
                r = c.post("/v1/collections/soak/query", json={"model": model, "vectors_b64": b64(q), "k": 10,
                                                               "include_payload": False})
                stats.add("query", r.status_code, time.perf_counter() - started)
            except httpx.HTTPError as exc:
                stats.add("query", type(exc).__name__)


def write_loop(url: str, world: World, stats: Stats, stop: threading.Event) -> None:
    rng = random.Random(1)
    n = len(world.latent)
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            with world.lock:
                model = world.write_model
            rows = np.array(rng.sample(range(n), 20))
            items = [{"id": f"item-{i}", "vector_b64": b64(v)} for i, v in zip(rows, world.embed(model, rows),
                                                                               strict=True)]
            try:
                r = c.post("/v1/collections/soak/items", json={"model": model, "items": items})
                stats.add("write", r.status_code)
                gone = int(rows[0])
                stats.add("delete", c.delete(f"/v1/collections/soak/items/item-{gone}").status_code)
                back = c.post("/v1/collections/soak/items", json={"model": model, "items": [
                    {"id": f"item-{gone}", "vector_b64": b64(world.embed(model, np.array([gone])))}]})
                stats.add("write", back.status_code)
            except httpx.HTTPError as exc:
                stats.add("write", type(exc).__name__)
            stop.wait(0.05)


def upgrade_loop(url: str, world: World, stats: Stats, stop: threading.Event, cycles: list[dict]) -> None:
    n = len(world.latent)
    version = 1
    with httpx.Client(base_url=url, timeout=120) as c:
        while not stop.is_set():
            old, new = f"v{version}", f"v{version + 1}"
            started = time.monotonic()
            c.post("/v1/models", json={"name": new, "dim": DIM, "successor_of": old}).raise_for_status()
            uid = next(u["id"] for u in c.get("/v1/upgrades").json() if u["new_model"] == new)
            rows = np.random.default_rng(version).choice(n, 2_000, replace=False)
            c.post(f"/v1/upgrades/{uid}/pairs", json={
                "ids": [f"pair-{version}-{i}" for i in rows], "old_vectors_b64": b64(world.embed(old, rows)),
                "new_vectors_b64": b64(world.embed(new, rows))}).raise_for_status()
            job = c.post(f"/v1/upgrades/{uid}/train", json={"method": "procrustes"}).raise_for_status().json()
            stats.add("train", wait_for_job(c, job["id"])["state"])
            c.post(f"/v1/upgrades/{uid}/activate", json={"force": True}).raise_for_status()
            with world.lock:
                world.live_models.append(new)
                world.write_model = new
            for start in range(0, n, 1_000):  # backfill: re-embed everything into the new version
                if stop.is_set():
                    return
                batch = np.arange(start, min(n, start + 1_000))
                items = [{"id": f"item-{i}", "vector_b64": b64(v)} for i, v in zip(batch, world.embed(new, batch),
                                                                                   strict=True)]
                stats.add("backfill", c.post("/v1/collections/soak/items",
                                             json={"model": new, "items": items}).status_code)
                stop.wait(0.5)
            with world.lock:
                world.live_models.remove(old)
            stop.wait(1.0)  # let queries in `old` already sent finish before it is retired
            retired = c.post("/v1/collections/soak/retire", json={"model": old})
            stats.add("retire", retired.status_code)
            cycles.append({"upgrade": f"{old}->{new}", "seconds": round(time.monotonic() - started, 1),
                           "retired": retired.status_code})
            version += 1


def run(minutes: float, items: int) -> dict:
    world = World(items)
    stats = Stats()
    samples: list[dict] = []
    cycles: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="nobackfill-soak-") as tmp:
        service = Service(Path(tmp), NOBACKFILL_MAX_BODY_BYTES=str(16 * 1024 * 1024))
        try:
            with httpx.Client(base_url=service.url, timeout=120) as c:
                c.post("/v1/models", json={"name": "v1", "dim": DIM}).raise_for_status()
                c.post("/v1/collections", json={"name": "soak", "model": "v1", "index": {"kind": "hnsw"}}
                       ).raise_for_status()
                for start in range(0, items, 2_000):
                    rows = np.arange(start, min(items, start + 2_000))
                    body = [{"id": f"item-{i}", "vector_b64": b64(v)} for i, v in zip(rows, world.embed("v1", rows),
                                                                                      strict=True)]
                    c.post("/v1/collections/soak/items", json={"model": "v1", "items": body}).raise_for_status()
            world.live_models = ["v1"]
            stop = threading.Event()
            threads = [threading.Thread(target=query_loop, args=(service.url, world, stats, stop, s), daemon=True)
                       for s in range(2)]
            threads += [threading.Thread(target=write_loop, args=(service.url, world, stats, stop), daemon=True),
                        threading.Thread(target=upgrade_loop, args=(service.url, world, stats, stop, cycles),
                                         daemon=True)]
            started = time.monotonic()
            for t in threads:
                t.start()
            while time.monotonic() - started < minutes * 60:
                time.sleep(10)
                counts, lat = stats.take()
                samples.append({"t_s": round(time.monotonic() - started, 1),
                                "rss_mb": round(service.rss_bytes() / 2**20, 1),
                                "queries": sum(v for k, v in counts.items() if k.startswith("query ")),
                                "query_p50_ms": round(1e3 * float(np.median(lat)), 2) if lat else None,
                                "query_p99_ms": round(1e3 * float(np.percentile(lat, 99)), 2) if lat else None,
                                "counts": dict(counts)})
                s = samples[-1]
                print(f"{s['t_s']:>7.0f} s  RSS {s['rss_mb']:>7.1f} MB  queries {s['queries']:>6}  "
                      f"p50 {s['query_p50_ms']} ms  p99 {s['query_p99_ms']} ms  cycles {len(cycles)}", flush=True)
            stop.set()
            for t in threads:
                t.join(timeout=120)
        finally:
            service.stop()
    return summarise(samples, cycles, items, minutes)


def summarise(samples: list[dict], cycles: list[dict], items: int, minutes: float) -> dict:
    totals: Counter[str] = Counter()
    for s in samples:
        totals.update(s["counts"])
    errors = {k: v for k, v in totals.items() if not k.split()[-1].startswith("2") and not k.endswith("succeeded")}
    per_minute = []
    for minute in range(1, int(np.ceil(minutes)) + 1):
        inside = [s for s in samples if minute - 1 < s["t_s"] / 60 <= minute]
        if inside:
            per_minute.append({"minute": minute, "rss_mb": inside[-1]["rss_mb"],
                               "queries": sum(s["queries"] for s in inside)})
    return {"minutes": minutes, "items": items, "dim": DIM, "requests": dict(totals), "errors": errors,
            "upgrade_cycles": cycles, "rss_per_minute": per_minute, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args()
    report = run(args.minutes, args.items)
    print("\n| minute | RSS MB | queries |\n|---|---|---|")
    for row in report["rss_per_minute"]:
        print(f"| {row['minute']} | {row['rss_mb']} | {row['queries']} |")
    print(f"\nrequests: {report['requests']}\nerrors: {report['errors'] or 'none'}\n"
          f"upgrade cycles completed: {len(report['upgrade_cycles'])}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
