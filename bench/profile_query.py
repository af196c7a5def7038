"""Where a served query spends its time: py-spy samples the service while a client sends queries.

    pip install -e ".[profile]"
    python -m bench.profile_query --kind hnsw --n 100000 --seconds 20

Starts the service (subprocess), ingests `n` vectors, then sends single base64 queries over one
keep-alive connection while `py-spy record` samples the service process (all threads, native
frames off). Prints the functions with the most samples, inclusive (anywhere on the stack) and by
self time, as shares of the samples taken while a request was being served; writes the raw
collapsed stacks to bench/results/profile_<kind>.txt for flame-graph tools.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.common import ROOT, Service, b64
from bench.serving import gallery_vectors, ingest, query_vectors

RESULTS = ROOT / "bench" / "results"
IDLE = ("epoll_wait", "select (selectors.py", "_worker (concurrent", "wait (threading.py", "_wait_for_tstate_lock")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", default="hnsw")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install -e '.[profile]'")

    x, _ = gallery_vectors(args.n, args.dim)
    queries = query_vectors(x, 2_000)
    data_dir = Path(tempfile.mkdtemp(prefix="nobackfill-profile-"))
    service = Service(data_dir, 1)
    out_file = RESULTS / f"profile_{args.kind}.txt"
    try:
        with httpx.Client(base_url=service.url, timeout=300) as client:
            client.post("/v1/models", json={"name": "bench-model", "dim": args.dim}).raise_for_status()
            client.post("/v1/collections", json={"name": "p", "model": "bench-model",
                                                 "index": {"kind": args.kind, "ivf_train_min": 10_000}}
                        ).raise_for_status()
            ingest(client, "p", x)
            stop = threading.Event()
            sent = [0]

            def load() -> None:
                i = 0
                while not stop.is_set():
                    client.post("/v1/collections/p/query", json={"model": "bench-model", "k": 10,
                                                                 "include_payload": False,
                                                                 "vector_b64": b64(queries[i % len(queries)])})
                    i += 1
                sent[0] = i

            loader = threading.Thread(target=load)
            loader.start()
            time.sleep(1)
            RESULTS.mkdir(parents=True, exist_ok=True)
            subprocess.run([spy, "record", "--pid", str(service.proc.pid), "--duration", str(args.seconds),
                            "--format", "raw", "--output", str(out_file), "--rate", "500", "--threads"],
                           check=True, capture_output=True)
            stop.set()
            loader.join()
    finally:
        service.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    report(out_file, args.top, sent[0] / (args.seconds + 1))


def report(path: Path, top: int, qps: float) -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    busy = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")[1:]  # first frame: the thread
        if not frames or any(marker in frames[-1] for marker in IDLE):
            continue
        n = int(count)
        busy += n
        for frame in set(frames):
            inclusive[frame] += n
        self_time[frames[-1]] += n
    print(f"~{qps:.0f} queries/s during the recording; {busy} busy samples")
    print("\ninclusive (share of busy samples):")
    for frame, n in inclusive.most_common(top):
        print(f"  {100 * n / busy:5.1f}%  {frame}")
    print("\nself:")
    for frame, n in self_time.most_common(top):
        print(f"  {100 * n / busy:5.1f}%  {frame}")
    print(f"\ncollapsed stacks: {path}")


if __name__ == "__main__":
    main()
