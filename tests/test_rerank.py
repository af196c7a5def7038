"""Exact re-scoring of quantised candidates (service/core/rerank.py), alone and through the API."""

from __future__ import annotations

import numpy as np
import pytest

from index import SearchResult
from service.core.rerank import exact_scores, rescore_exactly
from tests.conftest import unique
from tests.helpers import make_collection, make_model, upsert, wait_until_trained


def _store(vectors: dict[int, np.ndarray]):
    def stored(ids):
        found = [i for i in ids if i in vectors]
        return np.asarray(found, dtype=np.int64), np.asarray([vectors[i] for i in found], np.float32).reshape(-1, 3)
    return stored


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_candidates_are_reordered_by_their_exact_scores(metric: str) -> None:
    rng = np.random.default_rng(0)
    vectors = {i: rng.normal(size=3).astype(np.float32) for i in range(10, 20)}
    q = rng.normal(size=(2, 3)).astype(np.float32)
    candidates = np.array([[12, 15, 11, 19, -1], [18, 10, 13, 14, 16]])
    got = rescore_exactly(q, SearchResult(np.zeros((2, 5), np.float32), candidates), _store(vectors), metric, 3)
    for row in range(2):
        pool = [i for i in candidates[row] if i >= 0]
        exact = exact_scores(q[row:row + 1], np.stack([vectors[i] for i in pool]), metric)[0]
        order = np.argsort(-exact)[:3]
        assert got.ids[row].tolist() == [pool[j] for j in order]
        np.testing.assert_allclose(got.scores[row], exact[order], rtol=1e-5, atol=1e-6)


def test_candidates_gone_from_the_store_are_dropped_and_short_lists_padded() -> None:
    vectors = {1: np.array([1, 0, 0], np.float32), 2: np.array([0, 1, 0], np.float32)}
    result = SearchResult(np.zeros((1, 3), np.float32), np.array([[3, 2, 1]]))  # 3 was deleted meanwhile
    got = rescore_exactly(np.array([[1, 0.1, 0]], np.float32), result, _store(vectors), "cosine", 3)
    assert got.ids.tolist() == [[1, 2, -1]] and np.isneginf(got.scores[0, 2])
    empty = rescore_exactly(np.ones((1, 3), np.float32), SearchResult(np.zeros((1, 2), np.float32),
                                                                     np.array([[-1, -1]])), _store({}), "ip", 2)
    assert empty.ids.tolist() == [[-1, -1]]


def test_reranked_quantised_collection_returns_exact_scores_and_the_exact_top_k(client, live) -> None:
    """Through the service on each backend: an sq8 IVF collection with ivf_rerank answers with the
    exact cosine of the stored vectors and the exact top 10; without re-ranking (FAISS) its scores
    are the codes' approximations."""
    m = unique("rrm")
    make_model(client, m, 16)
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(8, 16))
    x = (centres[rng.integers(0, 8, 600)] + 0.4 * rng.normal(size=(600, 16))).astype(np.float32)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = (centres[:4] + 0.4 * rng.normal(size=(4, 16))).astype(np.float32)
    q_unit = q / np.linalg.norm(q, axis=1, keepdims=True)
    exact = q_unit @ unit.T
    scores = {}
    for rerank in (0, 8):
        c = unique("rrc")
        make_collection(client, c, m, index={"kind": "ivf", "ivf_train_min": 200, "ivf_nlist": 4, "ivf_nprobe": 4,
                                             "ivf_encoding": "sq8", "ivf_rerank": rerank})
        assert upsert(client, c, m, [f"v{i}" for i in range(600)], x, compact=True).status_code == 200
        wait_until_trained(client, c, live.settings.index_backend)
        body = client.post(f"/v1/collections/{c}/query",
                           json={"model": m, "vectors": q.tolist(), "k": 10, "include_payload": False}).json()
        got = [[int(h["id"][1:]) for h in row["hits"]] for row in body["results"]]
        scores[rerank] = [[h["score"] for h in row["hits"]] for row in body["results"]]
        want_scores = [exact[i, ids] for i, ids in enumerate(got)]
        if rerank:
            np.testing.assert_allclose(scores[rerank], want_scores, atol=2e-6)
            assert got == [np.argsort(-exact[i])[:10].tolist() for i in range(4)]
    if live.settings.index_backend == "faiss":  # Milvus scores a segment this small exactly by itself
        assert np.abs(np.asarray(scores[0]) - np.asarray(scores[8])).max() > 1e-5  # the codes are approximate


def test_rerank_without_quantised_codes_is_refused(client) -> None:
    m = unique("rrf")
    make_model(client, m, 4)
    r = client.post("/v1/collections", json={"name": unique("rrx"), "model": m,
                                             "index": {"kind": "ivf", "ivf_rerank": 4}})
    assert r.status_code == 422 and r.json()["field"] == "index.ivf_rerank"
