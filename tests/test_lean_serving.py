"""Serving loads only what it serves with: a gallery, and an upgrade whose map is a matrix, are
served by a process that has not imported torch (about 2 s of start-up and 190 MB resident), and a
service on the FAISS backend never imports pymilvus (with grpc and pandas, about 90 MB); #19's
restart and memory columns. Training loads torch on demand, in the process that trains."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from nobackfill.client import Client
from service.cli.main import _start_up_without_collections
from tests.test_durability import ServerProcess


def loads_torch(pid: int) -> bool:
    """Whether the process has torch's shared library mapped (Linux /proc)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def loads_milvus_client(pid: int) -> bool:
    """Whether the process has grpc's extension (which pymilvus brings) or pandas' mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "cygrpc" in maps or "/pandas/" in maps


def test_a_restarted_service_serves_an_upgraded_gallery_without_torch(tmp_path) -> None:
    rng = np.random.default_rng(0)  # the README's data: a better new model of 20 topics
    topic = rng.integers(0, 20, size=600)
    content = rng.normal(size=(20, 48))[topic] + 0.6 * rng.normal(size=(600, 48))
    old = (content[:, :16] + 0.8 * rng.normal(size=(600, 16))).astype(np.float32)
    new = (content @ rng.normal(size=(48, 24)) / 7).astype(np.float32)
    ids = [f"i{n}" for n in range(600)]
    server = ServerProcess(tmp_path / "data", f"sqlite:///{tmp_path / 'lean.db'}").start()
    try:
        with Client(server.url) as nb:
            nb.create_model("small", dim=16)
            nb.create_collection("g", "small", index={"kind": "hnsw"})
            nb.upsert_many("g", "small", ids, old)
            assert nb.query("g", "small", old[0], k=5).ids[0][0] == "i0"
            assert not loads_torch(server.proc.pid), "serving a gallery imported torch"
            assert not loads_milvus_client(server.proc.pid), "a FAISS service imported pymilvus"
            nb.create_model("large", dim=24, successor_of="small")
            upgrade = nb.upgrade_for("small", "large")
            nb.add_pairs(upgrade["id"], old[:400], new[:400], ids=ids[:400], labels=topic[:400].tolist())
            job = nb.wait_for_job(nb.train(upgrade["id"], method="procrustes")["id"], timeout=120)
            assert job["state"] == "succeeded", job
    finally:
        server.stop()
    server = ServerProcess(tmp_path / "data", f"sqlite:///{tmp_path / 'lean.db'}").start()
    try:
        with Client(server.url) as nb:
            hits = nb.query("g", "large", new[400:450], k=5)  # old vectors, reached through the map
            same_topic = [topic[int(row[1][1:])] == topic[400 + n] for n, row in enumerate(hits.ids)]
            assert np.mean(same_topic) >= 0.5, same_topic  # chance is 0.05
            assert nb.query("g", "small", old[0], k=5).ids[0][0] == "i0"
        assert not loads_torch(server.proc.pid), "serving an upgrade with a matrix map imported torch"
    finally:
        server.stop()


def test_start_up_runs_without_collections_and_collects_again_after_it() -> None:
    """`serve` imports and builds the app with the cyclic collector off (a sixth of the start-up
    went to collections that found nothing), then freezes what it built and turns it back on,
    failure or not: a service left without a collector would leak every reference cycle."""
    frozen_before = gc.get_freeze_count()
    with pytest.raises(RuntimeError), _start_up_without_collections():
        assert not gc.isenabled()
        kept = [[] for _ in range(10)]  # containers: objects the collector tracks, so freeze counts them
        raise RuntimeError("start-up failed")
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen_before + len(kept)
    gc.unfreeze()
