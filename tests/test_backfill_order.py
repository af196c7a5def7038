"""The backfill order's pieces (adapters/backfill_order.py): counting routed hits, ordering by them,
and, on real WordNet vectors, that the order reaches quality sooner than a random one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapters.backfill_order import counted_hits, hit_counts, hub_order, routed_hits, sample_rows, tally
from adapters.bundle import build_bundle
from adapters.metrics import scores_quality
from adapters.migration import leave_one_out, slot_merge
from adapters.vectors import normalize

DATA = Path(__file__).parent / "data" / "wordnet_subset.npz"


def test_counted_hits_skip_the_proxys_own_item_missing_hits_and_everything_past_the_depth() -> None:
    hits = np.array([[5, 7, 9, 11], [3, -1, 4, 8], [2, 6, 1, 0]])
    own = np.array([7, 3, 99])
    assert counted_hits(hits, own, depth=2).tolist() == [5, 9, 4, 8, 2, 6]
    counts = hit_counts(np.array([2, 4, 5, 6, 42]), tally(counted_hits(hits, own, depth=2)))
    assert counts.tolist() == [1, 1, 1, 1, 0]
    assert hit_counts(np.array([1, 2]), tally(np.empty(0, np.int64))).tolist() == [0, 0]


def test_hub_order_puts_the_most_retrieved_first_and_breaks_ties_by_insertion() -> None:
    ids = np.array([10, 11, 12, 13, 14])
    assert hub_order(ids, np.array([0, 3, 1, 3, 0])).tolist() == [11, 13, 12, 10, 14]


def test_sample_rows_is_fixed_and_takes_everything_when_small() -> None:
    assert sample_rows(5, 10, seed=1).tolist() == [0, 1, 2, 3, 4]
    a, b = sample_rows(1000, 50, seed=3), sample_rows(1000, 50, seed=3)
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 50 and list(a) == sorted(a)


def test_routed_hits_count_every_proxys_top_depth_once() -> None:
    rng = np.random.default_rng(0)
    old = rng.normal(size=(300, 16)).astype(np.float32)
    counts = routed_hits(old, np.asarray, np.asarray, depth=10)  # identity maps: proxies are the items
    assert counts.sum() == 300 * 10  # each proxy counts 10 items, never itself
    s = normalize(old) @ normalize(old).T
    np.fill_diagonal(s, -np.inf)
    expected = np.bincount(np.argsort(-s, axis=1)[:, :10].ravel(), minlength=300)
    assert counts.tolist() == expected.tolist()


@pytest.mark.parametrize("seed", [0, 1])
def test_on_real_vectors_the_order_brings_quality_sooner_than_a_random_one(seed: int) -> None:
    """A large upgrade, as static64 -> MiniLM is on the full sets: the old model is a 16-d random
    projection of the real MiniLM vectors (a much weaker encoder), the new one real mpnet, 480 WordNet
    items. Pairs of one half fit the map; the other half migrates as a gallery under the slot merge.
    Top-1 while it migrates is higher in the suggested order than in the mean of random orders."""
    d = np.load(DATA)
    old = d["minilm"].astype(np.float32) @ np.random.default_rng(42).normal(size=(384, 16)).astype(np.float32)
    new, labels = d["mpnet"].astype(np.float32), d["labels"]
    fit = np.sort(np.random.default_rng(seed).permutation(480)[:240])
    test = np.setdiff1d(np.arange(480), fit)
    bundle = build_bundle(old[fit], new[fit], labels[fit], method="procrustes", seed=seed)
    old_t, new_t = old[test], new[test]
    relevant = labels[test][:, None] == labels[test][None, :]
    native = leave_one_out(normalize(new_t) @ normalize(new_t).T)
    routed = leave_one_out(normalize(bundle.new_to_old(new_t)) @ normalize(old_t).T)

    def curve(order: np.ndarray) -> np.ndarray:
        out = []
        for share in np.linspace(0, 1, 11):
            in_new = np.zeros(len(test), bool)
            in_new[order[: int(round(share * len(test)))]] = True
            out.append(scores_quality(slot_merge(native, routed, in_new), relevant).top1)
        return np.array(out)

    suggested = curve(hub_order(np.arange(len(test)), routed_hits(old_t, bundle.old_to_new, bundle.new_to_old)))
    random = np.mean([curve(np.random.default_rng(100 + r).permutation(len(test))) for r in range(5)], axis=0)
    assert suggested[-1] - suggested[0] > 0.2, "the upgrade must be large for the order to matter"
    assert suggested[1:-1].mean() > random[1:-1].mean() + 0.02, (suggested, random)
