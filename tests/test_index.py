"""The FAISS index library on its own: every kind and metric, persistence, concurrency."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from index import IndexSpec, PartitionKey, PartitionWrite, available_backends, create_backend
from index.faiss import FaissBackend
from index.faiss.gpu import resolve_device
from index.faiss.kinds import PARTITION_KINDS, new_partition

KINDS = [IndexSpec(kind="flat"), IndexSpec(kind="hnsw"), IndexSpec(kind="ivf", ivf_train_min=400, ivf_nprobe=64)]


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    return (centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


def exact_top(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, metric: str) -> np.ndarray:
    if metric == "cosine":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        s = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ xn.T
    elif metric == "ip":
        s = q @ x.T
    else:
        s = -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return ids[np.argsort(-s, axis=1)[:, :k]]


@pytest.mark.parametrize("spec", KINDS, ids=lambda s: s.kind)
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_search_matches_exact_ranking(spec: IndexSpec, metric: str) -> None:
    x = clustered(1000, 16)
    ids = np.arange(5000, 6000, dtype=np.int64)
    part = new_partition(16, metric, spec)
    part.add(ids, x)
    if spec.kind == "ivf":
        assert part.trained
    q = clustered(20, 16, seed=1)
    got = part.search(q, 10)
    want = exact_top(x, ids, q, 10, metric)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got.ids, want, strict=True)])
    assert recall >= (1.0 if spec.kind == "flat" else 0.9)
    assert np.all(np.diff(got.scores, axis=1) <= 1e-5), "scores must be best first"


@pytest.mark.parametrize("spec", KINDS, ids=lambda s: s.kind)
def test_remove_hides_vectors_and_reuse_of_id_works(spec: IndexSpec) -> None:
    x = clustered(600, 8)
    part = new_partition(8, "cosine", spec)
    part.add(np.arange(600), x)
    part.remove(np.arange(0, 600, 2))
    assert len(part) == 300
    assert set(part.live_ids().tolist()) == set(range(1, 600, 2))
    res = part.search(x[:50], 5)
    assert not np.isin(res.ids, np.arange(0, 600, 2)).any()
    part.add(np.array([0]), x[:1])  # an id removed earlier may come back
    assert part.search(x[:1], 1).ids[0, 0] == 0
    assert len(part) == 301


def test_hnsw_compacts_when_tombstones_pile_up() -> None:
    x = clustered(3000, 8)
    part = new_partition(8, "cosine", IndexSpec(kind="hnsw"))
    part.add(np.arange(3000), x)
    part.remove(np.arange(1500))
    assert part.slot_live.all(), "removing half the graph must trigger a rebuild without dead slots"
    assert part.index.ntotal == 1500 and len(part) == 1500
    assert sorted(part.live_ids().tolist()) == list(range(1500, 3000))
    assert part.search(x[2000:2001], 1).ids[0, 0] == 2000


def test_ivf_stays_exact_until_enough_vectors() -> None:
    part = new_partition(8, "ip", IndexSpec(kind="ivf", ivf_train_min=500))
    part.add(np.arange(100), clustered(100, 8))
    assert not part.trained
    part.add(np.arange(100, 600), clustered(500, 8, seed=3))
    assert part.trained and len(part) == 600
    assert sorted(part.live_ids().tolist()) == list(range(600))


def test_empty_and_short_partitions_pad_results() -> None:
    part = new_partition(4, "cosine", IndexSpec())
    res = part.search(np.ones((2, 4), np.float32), 3)
    assert (res.ids == -1).all()
    part.add(np.array([7]), np.ones((1, 4), np.float32))
    res = part.search(np.ones((1, 4), np.float32), 3)
    assert res.ids.tolist() == [[7, -1, -1]] and np.isneginf(res.scores[0, 1:]).all()


def test_wrong_shapes_are_rejected() -> None:
    part = new_partition(4, "cosine", IndexSpec())
    with pytest.raises(ValueError):
        part.add(np.array([1, 2]), np.ones((2, 5), np.float32))
    with pytest.raises(ValueError):
        part.search(np.ones((1, 3), np.float32), 1)


@pytest.mark.parametrize("spec", KINDS, ids=lambda s: s.kind)
def test_persist_and_restore_round_trip(tmp_path, spec: IndexSpec) -> None:
    x = clustered(800, 12)
    key = PartitionKey(1, 1)
    backend = FaissBackend(tmp_path)
    backend.ensure_partition(key, 12, "cosine", spec)
    backend.apply(1, {1: PartitionWrite(add_ids=np.arange(800), add_vectors=x)})
    backend.apply(1, {1: PartitionWrite(remove=np.arange(10))})
    before = backend.search(1, {1: x[20:25]}, 5)[1]
    backend.apply(1, {}, tag=42)
    backend.persist(key)

    fresh = FaissBackend(tmp_path)
    assert fresh.restore(key, 12, "cosine", spec) == 42
    assert fresh.count(key) == 790
    after = fresh.search(1, {1: x[20:25]}, 5)[1]
    np.testing.assert_array_equal(before.ids, after.ids)
    # a snapshot for another configuration is not silently reused
    assert FaissBackend(tmp_path).restore(key, 13, "cosine", spec) is None


def test_snapshot_streams_the_index_to_disk(tmp_path) -> None:
    """Persisting never holds a copy of the index in memory (it used to hold three: an
    out-of-memory kill at 1M x 768-d), and snapshots in the earlier layout still load."""
    import io
    import json
    import tracemalloc

    import faiss

    x = clustered(20_000, 64)
    key = PartitionKey(1, 1)
    backend = FaissBackend(tmp_path)
    backend.ensure_partition(key, 64, "cosine", IndexSpec())
    backend.apply(1, {1: PartitionWrite(add_ids=np.arange(20_000), add_vectors=x)}, tag=7)
    index_bytes = 20_000 * 64 * 4
    tracemalloc.start()
    backend.persist(key)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < index_bytes / 4, f"persist allocated {peak} bytes for a {index_bytes}-byte index"
    # the earlier layout: np.savez with the index serialised into an array member
    part = backend._partitions[key]
    meta = {"tag": 5, "dim": 64, "metric": "cosine", "spec": IndexSpec().to_dict()}
    legacy = io.BytesIO()
    np.savez(legacy, index=faiss.serialize_index(part.index), slot_ids=np.empty(0, np.int64),
             slot_live=np.empty(0, bool), meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    (tmp_path / "c1" / "m1.npz").write_bytes(legacy.getvalue())
    fresh = FaissBackend(tmp_path)
    assert fresh.restore(key, 64, "cosine", IndexSpec()) == 5 and fresh.count(key) == 20_000
    assert fresh.search(1, {1: x[3:4]}, 1)[1].ids[0, 0] == 3


def test_corrupt_snapshot_is_ignored(tmp_path) -> None:
    key = PartitionKey(1, 1)
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / "m1.npz").write_bytes(b"not a snapshot")
    assert FaissBackend(tmp_path).restore(key, 4, "cosine", IndexSpec()) is None


def test_snapshot_with_a_flipped_byte_in_its_index_is_refused(tmp_path) -> None:
    """The index member is read straight from the file: its CRC is still checked."""
    import zipfile

    key = PartitionKey(1, 1)
    backend = FaissBackend(tmp_path)
    backend.ensure_partition(key, 8, "cosine", IndexSpec())
    backend.apply(1, {1: PartitionWrite(add_ids=np.arange(50), add_vectors=clustered(50, 8))}, tag=3)
    backend.persist(key)
    path = tmp_path / "c1" / "m1.npz"
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("index.faiss")
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size - 7] ^= 0x40  # a vector byte
    path.write_bytes(bytes(data))
    assert FaissBackend(tmp_path).restore(key, 8, "cosine", IndexSpec()) is None


def test_prefetched_snapshots_are_taken_when_unchanged(tmp_path, monkeypatch) -> None:
    """`nobackfill serve` starts reading snapshots before it imports the service: the backend takes
    each one from that read when the file is still the one read, and reads it itself otherwise."""
    from index.faiss import prefetch

    monkeypatch.chdir(tmp_path.parent)  # the service's default data directory is relative (./data)
    relative = tmp_path.relative_to(tmp_path.parent)
    x = clustered(300, 8)
    keys = [PartitionKey(1, 1), PartitionKey(1, 2), PartitionKey(2, 1)]
    backend = FaissBackend(relative)
    for key in keys:
        backend.ensure_partition(key, 8, "cosine", IndexSpec())
        backend.apply(key.collection, {key.model: PartitionWrite(add_ids=np.arange(300), add_vectors=x)}, tag=5)
        backend.persist(key)
    prefetch.start(relative)
    prefetch._started[tmp_path.resolve()]._done.wait()
    backend.apply(1, {}, tag=9)
    backend.persist(keys[1])  # rewritten after it was read (another tag): that read is stale

    reads: list[str] = []
    original = FaissBackend._read_snapshot
    monkeypatch.setattr(FaissBackend, "_read_snapshot",
                        staticmethod(lambda path, *a: reads.append(path.name) or original(path, *a)))
    fresh = FaissBackend(relative)
    assert prefetch.claim(tmp_path) is None, "the backend claimed its directory's prefetch"
    assert fresh.restore(keys[0], 8, "cosine", IndexSpec()) == 5 and reads == []
    assert fresh.restore(keys[1], 8, "cosine", IndexSpec()) == 9 and reads == ["m2.npz"]
    assert fresh.search(1, {1: x[7:8]}, 1)[1].ids[0, 0] == 7
    assert fresh.restore(keys[2], 16, "cosine", IndexSpec()) is None, "another configuration is not reused"
    fresh.startup_done()
    assert fresh._prefetch is None


def test_apply_is_atomic_across_partitions_for_searchers() -> None:
    """Moving ids between partitions under load: a searcher never sees an id in both or neither."""
    backend = FaissBackend()
    dim, n = 8, 200
    x = clustered(n, dim)
    a, b = PartitionKey(1, 1), PartitionKey(1, 2)
    for key in (a, b):
        backend.ensure_partition(key, dim, "cosine", IndexSpec())
    backend.apply(1, {1: PartitionWrite(add_ids=np.arange(n), add_vectors=x)})
    stop = threading.Event()
    errors: list[str] = []

    def searcher() -> None:
        while not stop.is_set():
            res = backend.search(1, {1: x[:4], 2: x[:4]}, n)
            found = np.concatenate([res[1].ids[0], res[2].ids[0]])
            found = found[found >= 0]
            if len(found) != n or len(set(found.tolist())) != n:
                errors.append(f"saw {len(found)} hits, {len(set(found.tolist()))} distinct")

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    src, dst = 1, 2
    for step in range(60):
        moved = np.arange(step % 10 * 20, step % 10 * 20 + 20)
        backend.apply(1, {src: PartitionWrite(remove=moved),
                            dst: PartitionWrite(add_ids=moved, add_vectors=x[moved])})
        backend.apply(1, {dst: PartitionWrite(remove=moved),
                            src: PartitionWrite(add_ids=moved, add_vectors=x[moved])})
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def test_device_resolution_falls_back_to_cpu() -> None:
    from index.faiss.gpu import gpu_count

    assert resolve_device("cpu") == "cpu"
    if gpu_count() == 0:
        assert resolve_device("auto") == "cpu"
        with pytest.raises(RuntimeError, match="no GPU"):
            resolve_device("cuda")
    else:
        assert resolve_device("auto") == "cuda"


@pytest.mark.parametrize("collection, model", [("../etc", 1), (1, "a/b"), (-1, 2), (True, 2), (1, 2**63), (1.0, 2)])
def test_partition_keys_are_integer_ids(collection, model) -> None:
    with pytest.raises(ValueError):
        PartitionKey(collection, model)


def test_partition_key_text_round_trips() -> None:
    key = PartitionKey(12, 3)
    assert key.encode() == "c12/m3" and (key.collection_name, key.model_name) == ("c12", "m3")
    assert PartitionKey.decode("c12/m3") == key
    for bad in ("c12/m", "c1/m2/x", "../m1", "c-1/m2", "m1/c2", ""):
        with pytest.raises(ValueError, match="not a partition key"):
            PartitionKey.decode(bad)


def test_backend_factory_builds_by_name(tmp_path) -> None:
    backend = create_backend("faiss", directory=tmp_path, device="cpu", threads=1)
    assert isinstance(backend, FaissBackend) and backend.directory == tmp_path
    assert available_backends() == ["faiss", "milvus"]
    with pytest.raises(ValueError, match="unknown index backend 'nope'; choose from faiss"):
        create_backend("nope")
    with pytest.raises(ValueError, match="unknown options"):
        create_backend("faiss", colour="blue")


def test_each_index_kind_is_its_own_partition_class() -> None:
    assert set(PARTITION_KINDS) == {"flat", "hnsw", "ivf"}
    for kind, cls in PARTITION_KINDS.items():
        part = new_partition(4, "cosine", IndexSpec(kind=kind))
        assert type(part) is cls and part.kind == kind
    with pytest.raises(ValueError, match="unknown index kind"):
        new_partition(4, "cosine", IndexSpec(kind="annoy"))  # type: ignore[arg-type]


def test_thread_count_applies_in_every_searching_thread() -> None:
    """OpenMP thread counts are per thread; worker threads must not fall back to all cores."""
    import threading

    import faiss

    backend = FaissBackend(None, threads=1)
    key = PartitionKey(1, 1)
    backend.ensure_partition(key, 8, "cosine", IndexSpec())
    backend.apply(1, {1: PartitionWrite(add_ids=np.arange(10), add_vectors=clustered(10, 8))})
    seen = {}

    def worker() -> None:
        backend.search(1, {1: clustered(1, 8)}, 3)
        seen["threads"] = faiss.omp_get_max_threads()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["threads"] == 1


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_backend_rebuilds_beside_the_live_index(kind: str, monkeypatch) -> None:
    """IVF training / HNSW compaction run in the background: searches and writes go on meanwhile,
    and writes made during the rebuild are in the new index."""
    import threading

    release, entered = threading.Event(), threading.Event()
    cls = PARTITION_KINDS[kind]
    original = cls.rebuilt

    def slow_rebuilt(self, ids, vecs):
        entered.set()
        assert release.wait(30)
        return original(self, ids, vecs)

    monkeypatch.setattr(cls, "rebuilt", slow_rebuilt)
    backend = FaissBackend()
    key = PartitionKey(1, 1)
    spec = IndexSpec(kind="ivf", ivf_train_min=1_000, ivf_nprobe=64) if kind == "ivf" else IndexSpec(kind="hnsw")
    backend.ensure_partition(key, 8, "cosine", spec)
    x = clustered(3_000, 8)
    backend.apply(1, {1: PartitionWrite(add_ids=np.arange(3_000), add_vectors=x)})
    if kind == "hnsw":  # tombstones past a fifth of the graph
        backend.apply(1, {1: PartitionWrite(remove=np.arange(1_500))})
    assert entered.wait(30), "a rebuild should have started"
    during = backend.state(key)
    assert during.rebuilding and during.structure == ("exact" if kind == "ivf" else "hnsw")
    # while it is being built: searches answer, writes land
    assert backend.search(1, {1: x[2_500:2_501]}, 1)[1].ids[0, 0] == 2_500
    backend.apply(1, {1: PartitionWrite(remove=np.array([2_999]),
                                              add_ids=np.array([9_000]), add_vectors=x[2_999:3_000])})
    release.set()
    assert backend.wait_for_rebuilds(60)
    after = backend.state(key)
    assert not after.rebuilding and after.structure == kind and after.vectors == (3_000 if kind == "ivf" else 1_500)
    part = backend._partitions[key]
    if kind == "ivf":
        assert part.trained
    else:  # compacted: only the removal replayed from the log is a tombstone
        assert (~part.slot_live).sum() == 1 and part.index.ntotal == 1_501
    live = set(backend.live_ids(key).tolist())
    assert 9_000 in live and 2_999 not in live
    assert len(live) == (3_000 if kind == "ivf" else 1_500)
    assert backend.search(1, {1: x[2_999:3_000]}, 1)[1].ids[0, 0] == 9_000


def test_queries_racing_a_retirement_never_fail() -> None:
    """A query plans over the partitions it sees, then searches them; a retirement may drop one in
    between (the soak run hit this as a 500). Sizes are one consistent reading and a dropped
    partition answers with no hits."""
    backend = FaissBackend()
    keys = [PartitionKey(1, m) for m in (1, 2)]
    rng = np.random.default_rng(0)
    for key in keys:
        backend.ensure_partition(key, 8, "cosine", IndexSpec())
        backend.apply(1, {key.model: PartitionWrite(add_ids=np.arange(50) + 100 * key.model,
                                                     add_vectors=rng.normal(size=(50, 8)).astype(np.float32))})
    stop, errors = threading.Event(), []

    def query() -> None:
        while not stop.is_set():
            try:
                planned = backend.sizes(1)
                result = backend.search(1, {m: rng.normal(size=(2, 8)).astype(np.float32) for m in planned}, 5)
                assert set(result) == set(planned)
            except Exception as exc:  # noqa: BLE001 -- any failure is the finding
                errors.append(exc)

    threads = [threading.Thread(target=query) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(200):
        backend.drop_partition(keys[1])
        backend.ensure_partition(keys[1], 8, "cosine", IndexSpec())
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    backend.drop_partition(keys[1])
    assert backend.sizes(1) == {1: 50}
    gone = backend.search(1, {2: np.ones((3, 8), np.float32)}, 4)[2]
    assert gone.ids.shape == (3, 4) and (gone.ids == -1).all()


# ---- quantised IVF lists (ivf_encoding) ------------------------------------------------------------
def _recall_and_bytes(spec: IndexSpec, x: np.ndarray, q: np.ndarray) -> tuple[float, float]:
    import faiss

    ids = np.arange(len(x), dtype=np.int64)
    part = new_partition(x.shape[1], "cosine", spec)
    part.add(ids, x)
    assert part.trained and part.structure == "ivf"
    got = part.search(q, 10).ids
    want = exact_top(x, ids, q, 10, "cosine")
    recall = float(np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)]))
    return recall, len(faiss.serialize_index(part.index)) / len(x)


def test_quantised_ivf_trades_memory_for_recall() -> None:
    """sq8 keeps a byte per dimension, pq a byte per ivf_pq_sub_dim dimensions: the index shrinks
    by about 4x and 4·sub_dim x against float32 lists, and recall@10 stays usable (measured here:
    flat 1.0, sq8 ~0.99, pq ~0.6 on this data)."""
    x, q = clustered(10_000, 32), clustered(50, 32, seed=1)
    base = IndexSpec(kind="ivf", ivf_train_min=1_000, ivf_nlist=16, ivf_nprobe=16)
    flat_recall, flat_bytes = _recall_and_bytes(base, x, q)
    sq8_recall, sq8_bytes = _recall_and_bytes(IndexSpec(**{**base.to_dict(), "ivf_encoding": "sq8"}), x, q)
    pq_recall, pq_bytes = _recall_and_bytes(IndexSpec(**{**base.to_dict(), "ivf_encoding": "pq"}), x, q)
    assert flat_recall == 1.0 and sq8_recall >= 0.95 and pq_recall >= 0.4
    # payload: flat 128 B + 8 B id per vector; sq8 32 + 8; pq 8 + 8
    assert sq8_bytes < 0.35 * flat_bytes and pq_bytes < 0.15 * flat_bytes


def test_pq_stays_exact_until_it_can_train_its_codebooks() -> None:
    part = new_partition(16, "cosine", IndexSpec(kind="ivf", ivf_train_min=500, ivf_encoding="pq"))
    part.add(np.arange(2_000), clustered(2_000, 16))
    assert not part.trained and part.structure == "exact"  # 256 centroids x 39 points = 9,984
    part.add(np.arange(2_000, 10_000), clustered(8_000, 16, seed=2))
    assert part.trained and len(part) == 10_000
    assert part.index.pq.M == 4  # 16 dims / ivf_pq_sub_dim 4


def test_quantised_partitions_remove_reconstruct_and_restore(tmp_path) -> None:
    spec = IndexSpec(kind="ivf", ivf_train_min=400, ivf_nprobe=64, ivf_encoding="sq8")
    x = clustered(800, 12)
    part = new_partition(12, "cosine", spec)
    part.add(np.arange(800), x)
    part.remove(np.arange(0, 800, 2))
    ids, vecs = part.live_vectors()  # reconstructions of the 8-bit codes, list by list
    assert sorted(ids.tolist()) == list(range(1, 800, 2))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.abs(vecs - unit[ids]).max() < 0.02
    key = PartitionKey(1, 1)
    backend = FaissBackend(tmp_path)
    backend.ensure_partition(key, 12, "cosine", spec)
    backend.apply(1, {1: PartitionWrite(add_ids=np.arange(800), add_vectors=x)}, tag=3)
    backend.wait_for_rebuilds()  # the training runs beside the live index
    assert backend.state(key).structure == "ivf"
    before = backend.search(1, {1: x[:5]}, 5)[1]
    backend.persist(key)
    fresh = FaissBackend(tmp_path)
    assert fresh.restore(key, 12, "cosine", spec) == 3
    np.testing.assert_array_equal(before.ids, fresh.search(1, {1: x[:5]}, 5)[1].ids)
    other = IndexSpec(**{**spec.to_dict(), "ivf_encoding": "flat"})
    assert FaissBackend(tmp_path).restore(key, 12, "cosine", other) is None  # another encoding: not reused


def test_specs_stored_before_encodings_existed_read_as_float_lists() -> None:
    old = {"kind": "ivf", "hnsw_m": 32, "hnsw_ef_construction": 80, "hnsw_ef_search": 64, "ivf_nlist": 0,
           "ivf_nprobe": 16, "ivf_train_min": 10_000}
    assert IndexSpec.from_dict(old) == IndexSpec(kind="ivf") and IndexSpec(kind="ivf").ivf_encoding == "flat"


@pytest.mark.parametrize("dim, sub_dim, m", [(768, 4, 192), (384, 4, 96), (10, 4, 2), (7, 4, 1), (64, 1, 64)])
def test_pq_subquantisers_divide_every_dimension(dim: int, sub_dim: int, m: int) -> None:
    assert IndexSpec(kind="ivf", ivf_encoding="pq", ivf_pq_sub_dim=sub_dim).pq_subquantisers(dim) == m
