"""Index backends for the conformance suite: each kind made fresh, and made again over the same
durable state (a restart). Milvus runs as embedded Milvus Lite under the test's tmp_path."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from index import IndexBackend, create_backend

BACKENDS = ["faiss", "milvus"]


def milvus_unavailable() -> str | None:
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError as exc:
        return f"Milvus Lite cannot start here: {exc}"
    return None


class BackendFactory:
    """Builds backends of one kind over one durable location, closing each on `reopen`/teardown."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self.prefix = f"t{uuid.uuid4().hex[:8]}_"
        self.opened: list[IndexBackend] = []

    def open(self) -> IndexBackend:
        if self.kind == "faiss":
            backend = create_backend("faiss", directory=self.root / "faiss", device="cpu", threads=1)
        else:
            reason = milvus_unavailable()
            if reason:
                pytest.skip(reason)
            backend = create_backend("milvus", uri=str(self.root / "milvus.db"), prefix=self.prefix,
                                     refresh_seconds=0.0)
        self.opened.append(backend)
        return backend

    def reopen(self, backend: IndexBackend) -> IndexBackend:
        """What a restarted service sees: the same durable state, a new backend object."""
        backend.close()
        return self.open()

    def close_all(self) -> None:
        for backend in self.opened:
            backend.close()


class MilvusServer:
    """`milvus-lite server`: the Milvus protocol on a loopback port, in its own process, as the
    multi-replica tests need (embedded Milvus Lite allows one process per data file)."""

    def __init__(self, data_dir: Path) -> None:
        import socket

        reason = milvus_unavailable()
        if reason:
            pytest.skip(reason)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.data_dir = data_dir
        self.uri = f"http://127.0.0.1:{self.port}"
        self.start(first=True)

    def start(self, first: bool = False) -> None:
        """Start (or, after `kill`, restart on the same port and data) and wait until it answers."""
        import subprocess
        import sys
        import time

        exe = Path(sys.executable).with_name("milvus-lite")
        log_path = self.data_dir.with_name(f"{self.data_dir.name}-server.log")  # a file, not an unread pipe
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen([str(exe), "server", "--data-dir", str(self.data_dir), "--host",
                                          "127.0.0.1", "--port", str(self.port)], stdout=subprocess.DEVNULL, stderr=log)
        from pymilvus import MilvusClient

        from index.milvus.backend import GRPC_OPTIONS

        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                why = f"milvus-lite server could not start: {log_path.read_text(errors='replace')[-500:]}"
                pytest.skip(why) if first else pytest.fail(why)
            try:
                client = MilvusClient(uri=self.uri, dedicated=True, timeout=2, grpc_options=GRPC_OPTIONS)
                client.list_collections()
                client.close()
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    why = "milvus-lite server did not answer within 60 s"
                    pytest.skip(why) if first else pytest.fail(why)
                time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: no shutdown, as a crash."""
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
