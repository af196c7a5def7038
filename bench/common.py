"""Helpers the benchmarks share: the service in a subprocess, compact vectors, job polling."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


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
        self.proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=ROOT, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("service did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def b64(x: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(x, dtype="<f4").tobytes()).decode()


def wait_for_job(client: httpx.Client, job_id: int, timeout: float = 3_600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.25)
    raise TimeoutError(f"job {job_id} did not finish in {timeout} s")
