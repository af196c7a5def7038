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

from service.job_watch import wait_for_job  # noqa: F401  (re-exported for the benchmarks)

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
        started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=ROOT, env=env)
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
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def b64(x: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(x, dtype="<f4").tobytes()).decode()
