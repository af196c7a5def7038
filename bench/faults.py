"""Faults as code: kill -9 the service again and again while it works, and check every write.

    python -m bench.faults --cycles 10                 # 10 cycles per scenario and database
    python -m bench.faults --cycles 3 --databases sqlite --scenarios ingest

Each cycle starts `nobackfill serve` (its own process, SQLite or PostgreSQL), runs two writer
threads (batches of new items; every third batch also rewrites ten of the writer's earlier items
with new vectors), adds the scenario's own work, and kills the process with SIGKILL at a random
moment:
- `ingest`: the writes alone;
- `training`: a training job of an upgrade (the kill lands while it runs: it must be re-queued and
  finish, or fail after its attempts, on restart);
- `rebuild`: a new IVF collection per cycle (256-d, so that k-means takes a moment) that a loader
  pushes across its training threshold; the kill lands while the index is trained in the
  background (the table says when the rebuild was not caught in progress).
Then it restarts the service (timing start -> /readyz) and checks every item ever acknowledged,
byte for byte, in the database (its row) and through the API (GET with the vector), plus one
query per item by its own vector (the index has it):
- lost: an acknowledged item missing, or holding an older version than its last acknowledged one;
- corrupted: a stored vector that is no version ever sent for the item, or an API answer that
  differs from the row;
- partial: a batch in flight at the kill that is neither wholly applied nor wholly absent;
- unindexed: an acknowledged item that a query with its own vector does not find first.
Vectors are a deterministic function of (item, version), so each stored one is recognised.
Prints a table, writes JSON (bench/results/faults.json by default). Cycles continue on the same
database, so later cycles also recover from earlier kills.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import create_engine, text

from bench.common import ROOT, Service, b64, pg_database

DIM = 32
BATCH = 40
REWRITES = 10
IVF_TRAIN_MIN = 4_000
WIDE_DIM = 256
SCENARIOS = ("ingest", "training", "rebuild")


def vector(item: str, version: int, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(f"{item}#{version}".encode()))
    return rng.normal(size=dim).astype("<f4")


@dataclass
class Attempt:
    versions: dict[str, int]  # item -> version sent
    new_items: list[str]
    acked: bool = False


class Writer(threading.Thread):
    """Sequential batches from one writer; each writer rewrites only its own items, so an item's
    last acknowledged write is its final state unless the write in flight at the kill committed."""

    def __init__(self, url: str, name: str, collection: str, counter: Iterator[int], rng: random.Random,
                 model: str = "v1", dim: int = DIM, batch: int = BATCH) -> None:
        super().__init__(daemon=True)
        self.url, self.name, self.collection, self.counter, self.rng = url, name, collection, counter, rng
        self.model, self.dim, self.batch = model, dim, batch
        self.attempts: list[Attempt] = []
        self.stop = threading.Event()

    def successor(self, url: str) -> Writer:
        """The same writer against a restarted service: its history and items carry over."""
        fresh = Writer(url, self.name, self.collection, self.counter, self.rng, self.model, self.dim, self.batch)
        fresh.attempts = self.attempts
        return fresh

    def run(self) -> None:
        mine: list[str] = [i for a in self.attempts for i in a.new_items]  # items from earlier cycles
        batch_no = len(self.attempts)
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self.stop.is_set():
                version = next(self.counter)
                new = [f"{self.name}-b{batch_no}-{i}"
                       for i in range(self.batch - (REWRITES if batch_no % 3 == 2 else 0))]
                old = self.rng.sample(mine, min(REWRITES, len(mine))) if batch_no % 3 == 2 else []
                items = new + old
                attempt = Attempt({i: version for i in items}, new)
                self.attempts.append(attempt)
                body = {"model": self.model,
                        "items": [{"id": i, "vector_b64": b64(vector(i, version, self.dim))} for i in items]}
                try:
                    r = c.post(f"/v1/collections/{self.collection}/items", json=body)
                except httpx.HTTPError:
                    return  # the service was killed
                attempt.acked = r.status_code == 200
                if attempt.acked:
                    mine.extend(new)
                elif r.status_code < 500:
                    raise RuntimeError(f"write refused: {r.status_code} {r.text[:300]}")
                batch_no += 1


@dataclass
class CycleResult:
    database: str
    scenario: str
    cycle: int
    killed_after_s: float
    killed_during: str
    acknowledged_items: int
    acknowledged_batches: int
    lost: int = 0
    corrupted: int = 0
    partial: int = 0
    unindexed: int = 0
    restart_failed: bool = False
    ready_s: float | None = None
    job: str | None = None
    examples: list[str] = field(default_factory=list)


def verify(url: str, database_url: str, collection: str, writers: list[Writer], result: CycleResult) -> None:
    """Compare what the writers of `collection` (one model) were told against the database and the API."""
    model, dim = writers[0].model, writers[0].dim
    allowed: dict[str, set[int]] = {}  # versions the item may hold now
    sent: dict[str, list[int]] = {}  # every version ever sent for the item
    last_acked: dict[str, int] = {}
    for w in writers:
        for a in w.attempts:
            for item, version in a.versions.items():
                sent.setdefault(item, []).append(version)
                if a.acked:
                    last_acked[item] = version
                    allowed[item] = {version}
                else:
                    allowed.setdefault(item, set()).add(version)  # in flight at a kill: may have landed
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = {key: bytes(data) for key, data in conn.execute(text(
            "SELECT i.key, i.vector FROM items i JOIN collections c ON c.id = i.collection_id WHERE c.name = :n"),
            {"n": collection}).all()}
    engine.dispose()

    def holds(item: str, versions) -> int | None:
        data = rows.get(item)
        return next((v for v in versions if data is not None and vector(item, v, dim).tobytes() == data), None)

    def flag(kind: str, item: str) -> None:
        setattr(result, kind, getattr(result, kind) + 1)
        if len(result.examples) < 10:
            result.examples.append(f"{collection}/{kind}: {item}")

    with httpx.Client(base_url=url, timeout=30) as c:
        for item in last_acked:
            if item not in rows:
                flag("lost", item)
            elif holds(item, allowed[item]) is None:
                flag("lost" if holds(item, sent[item]) is not None else "corrupted", item)  # older = rolled back
            else:
                r = c.get(f"/v1/collections/{collection}/items/{item}", params={"include_vector": "true"})
                if r.status_code != 200 or np.asarray(r.json()["vector"], dtype="<f4").tobytes() != rows[item]:
                    flag("corrupted", item)
        for w in writers:  # all or nothing for every batch that was not acknowledged
            for n, a in enumerate(w.attempts):
                if a.acked:
                    continue
                later = {i for b in w.attempts[n + 1:] for i in b.versions}
                landed = [holds(i, [v]) is not None for i, v in a.versions.items() if i not in later]
                if any(landed) and not all(landed):
                    flag("partial", next(iter(a.versions)))
        keys = sorted(i for i in last_acked if i in rows)
        for start in range(0, len(keys), 256):
            chunk = keys[start : start + 256]
            queries = np.stack([np.frombuffer(rows[i], dtype="<f4") for i in chunk])
            r = c.post(f"/v1/collections/{collection}/query",
                       json={"model": model, "vectors_b64": b64(queries), "k": 1, "include_payload": False})
            r.raise_for_status()
            for item, res in zip(chunk, r.json()["results"], strict=True):
                if not res["hits"] or res["hits"][0]["id"] != item:
                    flag("unindexed", item)


@contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'faults.db'}"
        return
    with pg_database("nobackfill_faults") as url:
        yield url


def _setup(url: str, scenario: str) -> int | None:
    """Models and the writers' collection; for training, an upgrade with pairs. The upgrade id, if any."""
    with httpx.Client(base_url=url, timeout=60) as c:
        c.post("/v1/models", json={"name": "v1", "dim": DIM}).raise_for_status()
        c.post("/v1/collections", json={"name": "g", "model": "v1", "index": {"kind": "hnsw"}}).raise_for_status()
        if scenario == "rebuild":  # wide vectors: IVF training takes long enough for the kill to land in it
            c.post("/v1/models", json={"name": "wide", "dim": WIDE_DIM}).raise_for_status()
        if scenario != "training":
            return None
        c.post("/v1/models", json={"name": "v2", "dim": DIM, "successor_of": "v1"}).raise_for_status()
        uid = c.get("/v1/upgrades").json()[0]["id"]
        rng = np.random.default_rng(0)
        old = rng.normal(size=(1_500, DIM)).astype("<f4")
        rot, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
        new = (old @ rot + rng.normal(scale=0.1, size=old.shape)).astype("<f4")
        labels = [str(i % 30) for i in range(len(old))]
        c.post(f"/v1/upgrades/{uid}/pairs", json={"ids": [f"p{i}" for i in range(len(old))], "labels": labels,
                                                  "old_vectors_b64": b64(old), "new_vectors_b64": b64(new)},
               ).raise_for_status()
        return uid


def _start(data: Path, database_url: str) -> Service:
    return Service(data, NOBACKFILL_DATABASE_URL=database_url, NOBACKFILL_SNAPSHOT_EVERY_CHANGES="300",
                   NOBACKFILL_SNAPSHOT_INTERVAL_SECONDS="0.3", NOBACKFILL_JOB_MAX_ATTEMPTS="3",
                   NOBACKFILL_MAX_BODY_BYTES=str(8 * 1024 * 1024))


def _rebuilding(c: httpx.Client, collection: str) -> bool:
    try:
        return any(p["rebuilding"] for p in c.get(f"/v1/collections/{collection}", timeout=2).json()["partitions"])
    except (httpx.HTTPError, KeyError, ValueError):
        return False


def _begin_work(url: str, scenario: str, cycle: int, uid: int | None, counter: Iterator[int],
                rng: random.Random, ivf_train_min: int) -> tuple[int | None, Writer | None]:
    """The scenario's own work for one cycle: a training job, or a new IVF collection and the
    loader that pushes it across its training threshold (IVF trains once, so one per cycle)."""
    with httpx.Client(base_url=url, timeout=30) as c:
        if scenario == "training":
            r = c.post(f"/v1/upgrades/{uid}/train", json={"method": "lambda_orth", "seed": cycle})
            r.raise_for_status()
            return r.json()["id"], None
        if scenario == "rebuild":
            name = f"r{cycle}"
            index = {"kind": "ivf", "ivf_train_min": ivf_train_min}
            c.post("/v1/collections", json={"name": name, "model": "wide", "index": index}).raise_for_status()
            loader = Writer(url, f"loader{cycle}", name, counter, rng, model="wide", dim=WIDE_DIM, batch=500)
            loader.start()
            return None, loader
    return None, None


def _kill_moment(url: str, scenario: str, loader: Writer | None, job_id: int | None, delay: float) -> str:
    """Wait for the moment to kill; what the service was doing then."""
    started = time.monotonic()
    with httpx.Client(base_url=url) as c:
        if scenario == "rebuild" and loader is not None:
            while time.monotonic() - started < delay + 5.0:
                if _rebuilding(c, loader.collection):
                    return "rebuild"
                time.sleep(0.01)
            return "ingest (no rebuild caught)"
        time.sleep(max(0.0, delay - (time.monotonic() - started)))
        if job_id is not None:
            state = c.get(f"/v1/jobs/{job_id}", timeout=5).json()["state"]
            return "training" if state == "running" else f"ingest (job {state})"
    return "ingest"


def run_scenario(kind: str, scenario: str, cycles: int, seed: int, workdir: Path,
                 kill_window: tuple[float, float] = (0.8, 2.0), ivf_train_min: int = IVF_TRAIN_MIN,
                 ) -> list[CycleResult]:
    rng = random.Random(seed)
    results: list[CycleResult] = []
    counter = iter(range(1, 10**9))
    workdir.mkdir(parents=True, exist_ok=True)
    with database(kind, workdir) as database_url:
        data = workdir / "data"
        service = _start(data, database_url)
        uid = _setup(service.url, scenario)
        writers = [Writer(service.url, f"w{i}", "g", counter, random.Random(seed * 10 + i)) for i in range(2)]
        loaders: list[Writer] = []
        for cycle in range(cycles):
            writers = [w.successor(service.url) for w in writers]
            for w in writers:
                w.start()
            started = time.monotonic()
            job_id, loader = _begin_work(service.url, scenario, cycle, uid, counter, rng, ivf_train_min)
            during = _kill_moment(service.url, scenario, loader, job_id, rng.uniform(*kill_window))
            killed_after = time.monotonic() - started
            service.proc.kill()
            service.proc.wait(timeout=30)
            if loader is not None:
                loaders.append(loader)
            for w in writers + loaders:
                w.stop.set()
                w.join(timeout=30)
            everyone = writers + loaders
            result = CycleResult(kind, scenario, cycle, round(killed_after, 2), during,
                                 acknowledged_items=sum(len({i for a in w.attempts if a.acked for i in a.versions})
                                                        for w in everyone),
                                 acknowledged_batches=sum(a.acked for w in everyone for a in w.attempts))
            try:
                service = _start(data, database_url)
                result.ready_s = round(service.ready_seconds, 2)
            except RuntimeError:
                result.restart_failed = True
                results.append(result)
                break
            verify(service.url, database_url, "g", writers, result)
            for done in loaders:
                verify(service.url, database_url, done.collection, [done], result)
            if job_id is not None:
                result.job = _job_outcome(service.url, job_id)
            results.append(result)
            print(_row(result), flush=True)
        service.stop()
    return results


def _job_outcome(url: str, job_id: int, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=10) as c:
        while time.monotonic() < deadline:
            job = c.get(f"/v1/jobs/{job_id}").json()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return f"{job['state']} after {job['attempts']} attempt(s)"
            time.sleep(0.2)
    return f"still {job['state']} after {timeout:.0f} s"


HEADER = ("database", "scenario", "cycle", "killed after s", "killed during", "acked items", "lost", "corrupted",
          "partial", "unindexed", "restart", "ready s", "job")


def _row(r: CycleResult) -> str:
    cells = (r.database, r.scenario, r.cycle, r.killed_after_s, r.killed_during, r.acknowledged_items, r.lost,
             r.corrupted, r.partial, r.unindexed, "FAILED" if r.restart_failed else "ok", r.ready_s, r.job or "")
    return "| " + " | ".join(str(c) for c in cells) + " |"


def summarise(results: list[CycleResult]) -> dict:
    ready = [r.ready_s for r in results if r.ready_s is not None]
    return {
        "cycles": len(results),
        "acknowledged_items_checked": sum(r.acknowledged_items for r in results),
        "lost": sum(r.lost for r in results), "corrupted": sum(r.corrupted for r in results),
        "partial": sum(r.partial for r in results), "unindexed": sum(r.unindexed for r in results),
        "restart_failures": sum(r.restart_failed for r in results),
        "ready_s_median": float(np.median(ready)) if ready else None, "ready_s_max": max(ready) if ready else None,
        "killed_during": {k: sum(r.killed_during == k for r in results) for k in sorted({r.killed_during
                                                                                          for r in results})},
        "jobs": [r.job for r in results if r.job],
    }


def run(cycles: int, databases: list[str], scenarios: list[str], seed: int = 0) -> dict:
    results: list[CycleResult] = []
    with tempfile.TemporaryDirectory(prefix="nobackfill-faults-") as tmp:
        print("| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER), flush=True)
        for kind in databases:
            for scenario in scenarios:
                results += run_scenario(kind, scenario, cycles, seed, Path(tmp) / f"{kind}-{scenario}")
    by_database = {kind: summarise([r for r in results if r.database == kind]) for kind in databases}
    return {"cycles_per_scenario": cycles, "summary": by_database, "results": [asdict(r) for r in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=10, help="kill -9 cycles per scenario and database")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "faults.json")
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    report = run(args.cycles, args.databases.split(","), scenarios, args.seed)
    print()
    for kind, summary in report["summary"].items():
        print(f"{kind}: " + ", ".join(f"{k} {v}" for k, v in summary.items() if k != "jobs"))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
