"""Helpers the benchmarks share: the service in a subprocess, compact vectors, job polling."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import create_engine, text

from service.cli.job_watch import wait_for_job  # noqa: F401  (re-exported for the benchmarks)

ROOT = Path(__file__).resolve().parents[1]
# The PostgreSQL server benchmarks create their throwaway databases on (its `test` database is only
# the admin connection): NOBACKFILL_BENCH_PG_URL, else the suite's NOBACKFILL_TEST_PG_URL, else the
# machine's trust-auth server.
PG_ADMIN_URL = (os.environ.get("NOBACKFILL_BENCH_PG_URL")
                or os.environ.get("NOBACKFILL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`nobackfill serve` in a subprocess with its own data directory."""

    def __init__(self, data_dir: Path, threads: int = 1, **env_overrides: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "NOBACKFILL_DATA_DIR": str(data_dir), "NOBACKFILL_PORT": str(self.port),
               "NOBACKFILL_FAISS_THREADS": str(threads), "NOBACKFILL_LOG_LEVEL": "warning",
               "NOBACKFILL_SQLITE_SYNCHRONOUS": "FULL", **env_overrides}
        env.pop("NOBACKFILL_API_KEY", None)
        started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "service.cli.main", "serve"], cwd=ROOT, env=env)
        deadline = time.monotonic() + 1_800
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    self.ready_seconds = time.monotonic() - started  # process start -> indexes loaded
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("service did not become ready")

    def rss_bytes(self) -> int:
        """Resident memory of the service process (Linux /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop_after_ready(self) -> float:
        """Start-up time (to /readyz), then a clean stop."""
        self.stop()
        return self.ready_seconds

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, a minute to exit cleanly, then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its descendants (Linux /proc), in seconds."""
    total, stack, tick = 0.0, [pid], os.sysconf("SC_CLK_TCK")
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def wait_quiet(pids: list[int], window: float = 2.0, busy: float = 0.05, timeout: float = 1_800,
               step: float = 0.25) -> float:
    """Block until the processes use under `busy` of a core over `window` seconds, and return the
    `time.perf_counter()` at which that quiet window began (to within `step`): when the background
    work an ingest started (index building, compaction, flushes) had finished. Milvus Lite answers a
    flush before it has built the sealed segments' indexes, so "flushed" is not "done" there; this is."""
    deadline = time.monotonic() + timeout
    samples: list[tuple[float, float]] = []  # (perf_counter, CPU seconds), one every `step`
    while time.monotonic() < deadline:
        now, cpu = time.perf_counter(), sum(tree_cpu_seconds(pid) for pid in pids)
        samples.append((now, cpu))
        while len(samples) > 1 and now - samples[1][0] >= window:  # keep the oldest sample >= window ago
            samples.pop(0)
        began, cpu_then = samples[0]
        if now - began >= window and cpu - cpu_then < busy * (now - began):
            return began
        time.sleep(step)
    raise TimeoutError(f"processes {pids} still busy after {timeout} s")


class LeanClient:
    """One keep-alive HTTP/1.1 connection (the standard library's http.client) for timing requests.

    httpx builds request and response objects, header models and an event-hook chain per call:
    about 0.27 ms per request on this machine, as much as an HNSW search. Query timings use this
    client so that they measure the service rather than the client library; bench/serving.py also
    reports the httpx number beside it.
    """

    def __init__(self, url: str, timeout: float = 300) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def post_json(self, path: str, body: dict) -> bytes:
        """POST a JSON body; return the response body, raising on a non-200 status.

        The server closes keep-alive connections idle for more than a few seconds (uvicorn: 5 s);
        like any HTTP client, reconnect once when the kept connection turns out to be closed.
        """
        payload = json.dumps(body)
        try:
            response = self._send(path, payload)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            self.conn.close()
            response = self._send(path, payload)
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}: {data[:500]!r}")
        return data

    def _send(self, path: str, payload: str) -> http.client.HTTPResponse:
        self.conn.request("POST", path, payload, {"content-type": "application/json"})
        return self.conn.getresponse()

    def close(self) -> None:
        self.conn.close()


def wait_for_index(client: httpx.Client, collection: str, timeout: float = 3_600) -> float:
    """Wait until no partition of the collection is being rebuilt (IVF training and HNSW compaction
    run in the background after writes); return the seconds waited. Timings taken before this
    would measure whichever index happened to be live."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        parts = client.get(f"/v1/collections/{collection}").raise_for_status().json()["partitions"]
        if not any(p["rebuilding"] for p in parts):
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"{collection}: indexes still rebuilding after {timeout} s")


@contextmanager
def pg_database(prefix: str, admin_url: str = PG_ADMIN_URL) -> Iterator[str]:
    """A fresh, empty PostgreSQL database on `admin_url`'s server for one run; its URL. Dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def b64(x: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(x, dtype="<f4").tobytes()).decode()
