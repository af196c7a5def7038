"""Metrics against hand-computed cases (methods.md definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adapters.metrics import (
    compatibility_summary,
    consensus_neighbours,
    gap_closed,
    map_at_r,
    neighbour_map_at_r,
    neighbour_metrics,
    pairing_metrics,
    passes_ecc,
    per_query_quality,
    retrieval_metrics,
)


def unit(*angles_deg: float) -> np.ndarray:
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def test_leave_one_out_by_hand() -> None:
    # Items at angles 0, 10, 20, 100 degrees; labels a, b, a, a.
    x = unit(0, 10, 20, 100)
    labels = ["a", "b", "a", "a"]
    m = retrieval_metrics(x, x, labels)
    # query 0 (a): ranking 1(b),2(a),3(a) -> rel 0,1,1; R=2; AP=(1/2+2/3)/2; AP@R=(1/2)/2; top1 0, top5 1
    # query 1 (b): R=0 -> not counted
    # query 2 (a): ranking 1(b),0(a),3(a) -> rel 0,1,1 -> same as query 0
    # query 3 (a): ranking 2(a),1(b),0(a) -> rel 1,0,1; AP=(1+2/3)/2; AP@R=(1)/2; top1 1
    ap = [(0.5 + 2 / 3) / 2, (0.5 + 2 / 3) / 2, (1 + 2 / 3) / 2]
    apr = [0.25, 0.25, 0.5]
    assert m.queries == 3
    assert m.top1 == pytest.approx(1 / 3)
    assert m.top5 == pytest.approx(1.0)
    assert m.mAP == pytest.approx(np.mean(ap))
    assert m.mAP_at_R == pytest.approx(np.mean(apr))


def test_cross_model_queries_and_chunking_agree() -> None:
    rng = np.random.default_rng(0)
    g = rng.normal(size=(200, 8)).astype(np.float32)
    q = g + 0.5 * rng.normal(size=g.shape).astype(np.float32)
    labels = rng.integers(0, 7, size=200)
    full = retrieval_metrics(q, g, labels, chunk=1000)
    chunked = retrieval_metrics(q, g, labels, chunk=7)
    assert full == chunked
    assert retrieval_metrics(g, g, labels).top1 <= 1.0


@pytest.mark.parametrize("ties", [False, True])
def test_head_only_rankings_equal_the_full_ranking(ties: bool) -> None:
    """Top-1 / AP@R from partitioned heads equal the full stable sort's, ties at the cut included
    (coarsely rounded vectors tie often), many classes (short heads: the partition path) and few
    (long heads: the sort path)."""
    rng = np.random.default_rng(1)
    for classes in (60, 3):
        g = rng.normal(size=(700, 6)).astype(np.float32)
        q = g + 0.7 * rng.normal(size=g.shape).astype(np.float32)
        if ties:
            g, q = np.round(g), np.round(q)
        labels = rng.integers(0, classes, size=700)
        full = retrieval_metrics(q, g, labels, chunk=256)
        quality = per_query_quality(q, g, labels, chunk=256)
        valid = ~np.isnan(quality[:, 1])
        assert valid.sum() == full.queries
        assert quality[valid, 0].mean() == pytest.approx(full.top1, abs=1e-12)
        assert quality[valid, 1].mean() == pytest.approx(full.mAP_at_R, abs=1e-12)
        assert map_at_r(q, g, labels, chunk=100) == pytest.approx(full.mAP_at_R, abs=1e-12)
        neighbours = consensus_neighbours(g, q + 0.3 * rng.normal(size=q.shape).astype(np.float32))
        assert neighbour_map_at_r(q, g, neighbours, chunk=128) == pytest.approx(
            neighbour_metrics(q, g, neighbours).mAP_at_R, abs=1e-12)


def test_fast_ranking_orders_ties_like_a_stable_sort() -> None:
    from adapters.metrics import _ranked, _ranked_head

    rng = np.random.default_rng(2)
    scores = np.round(rng.normal(size=(300, 400)), 1).astype(np.float32)  # many ties per row
    scores[5, 7] = np.nan
    expected = np.argsort(-scores, axis=1, kind="stable")
    assert np.array_equal(_ranked(scores.copy(), None), expected)
    for depth in (1, 13, 290):
        assert np.array_equal(_ranked_head(scores.copy(), None, depth), expected[:, :depth])


def test_pairing_by_hand() -> None:
    gallery = unit(0, 90, 180)
    queries = unit(80, 95, 175)  # q0 is nearest to g1 (rank of own = 2), q1 -> g1 (1), q2 -> g2 (1)
    p = pairing_metrics(queries, gallery)
    assert p.recall_at_1 == pytest.approx(2 / 3)
    assert p.recall_at_10 == pytest.approx(1.0)
    assert p.mrr == pytest.approx((1 / 2 + 1 + 1) / 3)


def test_consensus_neighbours_need_both_models() -> None:
    old = unit(0, 1, 90, 91)
    new = unit(0, 1, 90, 91)
    new_swapped = unit(0, 91, 90, 1)  # in the new model item 1 sits next to item 2
    assert consensus_neighbours(old, new, k=1).tolist() == [[1], [0], [3], [2]]
    agreed = consensus_neighbours(old, new_swapped, k=1)
    assert agreed[0].tolist() == [-1] and agreed[2].tolist() == [-1]
    m = neighbour_metrics(old, old, consensus_neighbours(old, new, k=1))
    assert m.top1 == 1.0 and m.mAP_at_R == 1.0


def test_ecc_gap_and_chain_summary() -> None:
    assert passes_ecc(0.41, 0.40) and not passes_ecc(0.40, 0.40)
    assert gap_closed(0.45, 0.40, 0.50) == pytest.approx(0.5)
    assert math.isnan(gap_closed(0.45, 0.40, 0.40))
    c = [[0.30], [0.35, 0.40], [0.20, 0.45, 0.50]]
    s = compatibility_summary(c)
    # pairs (1,0): .35>.30 yes; (2,0): .20>.30 no; (2,1): .45>.40 yes -> AC = 2/3
    assert s["AC"] == pytest.approx(2 / 3)
    assert s["AM"] == pytest.approx(np.mean([0.30, 0.35, 0.40, 0.20, 0.45, 0.50]))


def test_rejects_unusable_inputs() -> None:
    x = unit(0, 10)
    with pytest.raises(ValueError, match="relevant"):
        retrieval_metrics(x, x, ["a", "b"])
    with pytest.raises(ValueError, match="width"):
        retrieval_metrics(x, np.ones((2, 3), np.float32), ["a", "a"])
