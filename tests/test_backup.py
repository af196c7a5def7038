"""`nobackfill backup` under write load and `nobackfill restore` into a fresh database and data
directory, on SQLite and PostgreSQL: every item acknowledged before the backup started comes back
byte for byte, and the restored service's queries answer exactly over what it holds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import _database_of_kind
from tests.helpers import make_collection, make_model, upsert
from tests.test_durability import servers  # noqa: F401  (fixture)

DIM = 16


def _cli(*args: str, database_url: str, data_dir: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NOBACKFILL_DATABASE_URL": database_url, "NOBACKFILL_DATA_DIR": str(data_dir), **extra_env}
    return subprocess.run([sys.executable, "-m", "service.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


class Writer(threading.Thread):
    """Upserts batches of new items, and now and then overwrites an earlier batch, recording when
    each write was sent and acknowledged."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.rng = url, threading.Event(), np.random.default_rng(0)
        self.writes: list[tuple[float, float | None, dict[str, np.ndarray]]] = []  # sent, acked, id->vector

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            batch = 0
            while not self.stop.is_set():
                base = batch if batch % 3 else max(0, batch - 5)  # every third batch rewrites an old one
                ids = [f"item-{base}-{j}" for j in range(40)]
                vectors = self.rng.normal(size=(len(ids), DIM)).astype(np.float32)
                sent = time.time()
                ok = upsert(c, "g", "v1", ids, vectors, compact=True).status_code == 200
                self.writes.append((sent, time.time() if ok else None, dict(zip(ids, vectors, strict=True))))
                batch += 1
                time.sleep(0.05)

    def expected_before(self, instant: float) -> tuple[dict[str, np.ndarray], set[str]]:
        """Each id's last vector acknowledged before `instant`, and the ids written to after it."""
        last: dict[str, np.ndarray] = {}
        later: set[str] = set()
        for sent, acked, batch in self.writes:
            if acked is not None and acked < instant:
                last.update(batch)
            if sent >= instant or acked is None or acked >= instant:
                later.update(batch)
        return last, later


@pytest.fixture(params=["sqlite", "postgresql"])
def two_databases(request, tmp_path):
    """The live service's database and an empty one to restore into, of the same kind."""
    if request.param == "postgresql" and (shutil.which("pg_dump") is None or shutil.which("pg_restore") is None):
        pytest.skip("pg_dump / pg_restore not installed (Debian package postgresql-client)")
    source = _database_of_kind(request, tmp_path / "a", request.param)
    target = _database_of_kind(request, tmp_path / "b", request.param)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    yield next(source), next(target)
    for gen in (source, target):
        gen.close()


def test_backup_under_write_load_restores_every_acknowledged_item(start_server, two_databases, tmp_path) -> None:
    source_url, target_url = two_databases
    server = start_server(source_url, data_dir=tmp_path / "data-a", snapshot_every_changes=200,
                          snapshot_interval_seconds=0.2)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        make_model(c, "v1", DIM)
        make_collection(c, "g", "v1", index={"kind": "flat"})
    writer = Writer(server.url)
    writer.start()
    while len(writer.writes) < 15:  # some history, and index snapshots on disk
        time.sleep(0.05)
    backup_started = time.time()
    done = _cli("backup", str(tmp_path / "backup"), database_url=source_url, data_dir=tmp_path / "data-a")
    backup_ended = time.time()
    time.sleep(0.3)
    writer.stop.set()
    writer.join(timeout=30)
    assert done.returncode == 0, done.stderr
    assert sum(1 for sent, _, _ in writer.writes if backup_started <= sent <= backup_ended) >= 1, "no write overlapped"
    assert (tmp_path / "backup" / "indexes").is_dir(), "FAISS snapshots are part of the backup"
    server.stop()

    # restoring into a non-empty database needs --force and changes nothing without it
    refused = _cli("restore", str(tmp_path / "backup"), database_url=source_url, data_dir=tmp_path / "data-a")
    assert refused.returncode == 1 and "not empty" in refused.stderr
    restored = _cli("restore", str(tmp_path / "backup"), database_url=target_url, data_dir=tmp_path / "data-b")
    assert restored.returncode == 0, restored.stderr
    server = start_server(target_url, data_dir=tmp_path / "data-b")

    expected, rewritten = writer.expected_before(backup_started)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.get("/readyz").status_code == 200
        count = c.get("/v1/collections/g").json()["items"]
        held = {}  # what the restored service holds, read once through the API
        for key in sorted({k for _, _, batch in writer.writes for k in batch}):
            r = c.get(f"/v1/collections/g/items/{key}", params={"include_vector": "true"})
            if r.status_code == 200:
                held[key] = np.asarray(r.json()["vector"], dtype=np.float32)
        assert len(held) == count >= len(expected)
        missing = [key for key in expected if key not in held]
        assert not missing, f"{len(missing)} items acknowledged before the backup are missing, e.g. {missing[:3]}"
        for key, vector in expected.items():
            if key not in rewritten:  # else: this or a later acknowledged version
                assert held[key].tobytes() == vector.tobytes(), key
        # queries answer exactly over the restored gallery (the FAISS snapshot and the database agree)
        keys = list(held)
        gallery = np.stack([held[k] for k in keys])
        gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
        for key in [k for k in expected if k not in rewritten][:20]:
            hits = c.post("/v1/collections/g/query", json={"model": "v1", "vector": held[key].tolist(), "k": 5})
            q = held[key] / np.linalg.norm(held[key])
            exact = [keys[i] for i in np.argsort(-(gallery @ q), kind="stable")[:5]]
            assert [h["id"] for h in hits.json()["hits"]] == exact


def test_a_damaged_backup_is_refused_before_anything_changes(start_server, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    server = start_server(url, data_dir=tmp_path / "data-a")
    with httpx.Client(base_url=server.url, timeout=30) as c:
        make_model(c, "v1", DIM)
    server.stop()
    assert _cli("backup", str(tmp_path / "b"), database_url=url, data_dir=tmp_path / "data-a").returncode == 0
    again = _cli("backup", str(tmp_path / "b"), database_url=url, data_dir=tmp_path / "data-a")
    assert again.returncode == 1 and "exists" in again.stderr
    database = tmp_path / "b" / "database.sqlite"
    data = bytearray(database.read_bytes())
    data[len(data) // 2] ^= 0xFF
    database.write_bytes(bytes(data))
    target = tmp_path / "c.db"
    out = _cli("restore", str(tmp_path / "b"), database_url=f"sqlite:///{target}", data_dir=tmp_path / "data-c")
    assert out.returncode == 1 and "checksum" in out.stderr
    assert not (tmp_path / "data-c" / "indexes").exists()


def test_restoring_in_place_on_milvus_serves_the_backup_not_newer_vectors(servers, tmp_path) -> None:  # noqa: F811
    """Milvus keeps vectors of its own: restoring an older database over the same Milvus must not
    leave it serving items (or vectors) written after the backup."""
    from tests.conftest import backend_settings

    prefix = backend_settings("milvus")["milvus_prefix"]  # skips, saying why, without Milvus Lite
    env = {"NOBACKFILL_INDEX_BACKEND": "milvus", "NOBACKFILL_MILVUS_PREFIX": prefix}
    url, data = f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "data"
    rng = np.random.default_rng(1)
    before, after = rng.normal(size=(50, DIM)).astype(np.float32), rng.normal(size=(50, DIM)).astype(np.float32)
    server = servers(data, url, **env).start()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        make_model(c, "v1", DIM)
        make_collection(c, "g", "v1", index={"kind": "flat"})
        assert upsert(c, "g", "v1", [f"a{i}" for i in range(50)], before, compact=True).status_code == 200
    assert _cli("backup", str(tmp_path / "b"), database_url=url, data_dir=data, **env).returncode == 0
    with httpx.Client(base_url=server.url, timeout=30) as c:  # written after the backup
        assert upsert(c, "g", "v1", [f"a{i}" for i in range(25)], after[:25], compact=True).status_code == 200
        assert upsert(c, "g", "v1", [f"z{i}" for i in range(25)], after[25:], compact=True).status_code == 200
    server.stop()
    done = _cli("restore", str(tmp_path / "b"), "--force", database_url=url, data_dir=data, **env)
    assert done.returncode == 0 and "'milvus_collections_dropped': 1" in done.stdout, done.stdout + done.stderr
    server = servers(data, url, **env).start()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        info = c.get("/v1/collections/g").json()
        assert info["items"] == 50 and info["partitions"][0]["vectors"] == 50
        for i in (0, 10, 24):
            hits = c.post("/v1/collections/g/query", json={"model": "v1", "vector": before[i].tolist(), "k": 1}).json()
            assert hits["hits"][0]["id"] == f"a{i}" and hits["hits"][0]["score"] > 0.999
            stale = c.post("/v1/collections/g/query", json={"model": "v1", "vector": after[i].tolist(), "k": 1}).json()
            assert stale["hits"][0]["score"] < 0.999, "a vector written after the backup is still served"
        assert c.get("/v1/collections/g/items/z0").status_code == 404
