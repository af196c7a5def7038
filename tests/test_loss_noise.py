"""bench.loss_noise: the resampled count of "more than .005 below the better baseline" -- a rule that is the
better baseline never loses on the full test half, a rule far below on every query is a resolved loss, and a
tie between the two baselines puts expected losses under even the hindsight rule."""

from __future__ import annotations

import numpy as np
import pytest

from bench.loss_noise import hindsight, query_qualities, resampled_means, rule_rows


def _quality(top1: np.ndarray, apr: np.ndarray) -> np.ndarray:
    return np.stack([top1.astype(np.float64), apr.astype(np.float64)], axis=1)


def _maps(rng: np.random.Generator, n: int = 2000) -> dict[str, np.ndarray]:
    """Procrustes and ridge with the same expected top-1 (independent hits: a tie); the adjoint two
    points of top-1 below Procrustes on every resample; the hedge equal to Procrustes."""
    procrustes = _quality(rng.random(n) < 0.5, np.full(n, 0.20))
    ridge = _quality(rng.random(n) < 0.5, np.full(n, 0.20))
    adjoint = procrustes.copy()
    flip = np.flatnonzero(procrustes[:, 0] == 1)[: n // 25]  # 80 hits lost: top-1 -.04
    adjoint[flip, 0] = 0
    adjoint[:, 1] = 0.25
    return {"procrustes": procrustes, "affine": ridge, "adjoint": adjoint, "hedge": procrustes.copy()}


def test_the_first_row_is_the_full_test_half_and_queries_without_relevant_items_are_left_out() -> None:
    q = _quality(np.array([1, 0, 1, 1]), np.array([0.5, 0.0, 1.0, 1.0]))
    q[3] = np.nan  # a query with no relevant item
    means = resampled_means({"procrustes": q}, resamples=50, seed=0)["procrustes"]
    assert means.shape == (51, 2)
    assert means[0] == pytest.approx([2 / 3, 0.5])
    assert not np.isnan(means).any()


def test_serving_the_better_baseline_is_no_loss_on_the_test_half_but_a_tie_makes_resamples_lose() -> None:
    quality = _maps(np.random.default_rng(0))
    rows = rule_rows(quality, served="hedge", resamples=400, seed=0)
    chosen = hindsight(resampled_means(quality, 0, 0))
    assert rows["hindsight"]["map"] == chosen
    assert not rows["hindsight"]["loss"] and not rows["hindsight"]["resolved_loss"]
    # two baselines tied in expectation: the max of the two noisy ones is above either often enough
    assert 0.1 < rows["hindsight"]["loss_share"] < 0.9
    assert rows["auto"]["map"] == "hedge" and rows["auto"]["se"]["top1"] > 0.005


def test_a_map_far_below_on_top1_is_a_resolved_loss_with_its_standard_error() -> None:
    quality = _maps(np.random.default_rng(1))
    rows = rule_rows(quality, served="adjoint", resamples=400, seed=0)
    auto = rows["auto"]
    assert auto["loss"] and auto["resolved_loss"] and auto["loss_share"] > 0.95
    assert auto["delta"]["mAP@R"] > 0  # the loss is top-1 alone
    assert 0.002 < auto["se"]["top1"] < 0.02
    assert rows["adjoint"] == auto  # the same map under its own name


def test_a_refit_must_reproduce_the_recorded_score_within_the_allowed_queries() -> None:
    rng = np.random.default_rng(2)
    gallery = rng.standard_normal((40, 8)).astype(np.float32)
    labels = np.repeat(np.arange(10), 4)
    quality, drift = query_qualities({"procrustes": gallery}, gallery, labels, {}, "run")
    top1 = float(np.nanmean(quality["procrustes"][:, 0]))
    recorded = {"procrustes": {"top1": top1 + 2 / 40, "mAP@R": float(np.nanmean(quality["procrustes"][:, 1]))}}
    with pytest.raises(ValueError, match="2.0 queries' worth off"):
        query_qualities({"procrustes": gallery}, gallery, labels, recorded, "run")
    _, drift = query_qualities({"procrustes": gallery}, gallery, labels, recorded, "run", allowed=2)
    assert drift == pytest.approx(2.0)
