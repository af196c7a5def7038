"""Choosing the training pairs nearest to the gallery (adapters/pair_selection.py)."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.pair_selection import pairs_near_gallery


def test_each_gallery_item_brings_its_nearest_pairs_by_the_old_model() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)
    pairs_old = np.vstack([centres[c] + 0.05 * rng.normal(size=(20, 8)) for c in range(8)]).astype(np.float32)
    gallery_old = np.vstack([centres[c] + 0.05 * rng.normal(size=(5, 8)) for c in (2, 5)]).astype(np.float32)

    chosen = pairs_near_gallery(pairs_old, gallery_old, per_item=3)

    assert np.all(np.diff(chosen) > 0)  # sorted, unique
    cluster_of = chosen // 20
    assert set(cluster_of) <= {2, 5}  # only where the gallery is
    assert 3 <= len(chosen) <= 10 * 3
    # every gallery item's own 3 nearest pairs are among them (checked by brute force)
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sims = norm(gallery_old) @ norm(pairs_old).T
    assert set(np.argsort(-sims, axis=1)[:, :3].ravel()) == set(chosen)


def test_per_item_larger_than_the_pairs_takes_them_all_and_bad_input_is_refused() -> None:
    pairs_old = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    assert list(pairs_near_gallery(pairs_old, pairs_old[:1], per_item=10)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="per_item"):
        pairs_near_gallery(pairs_old, pairs_old, per_item=0)
    with pytest.raises(ValueError, match="dimension"):
        pairs_near_gallery(pairs_old, np.ones((2, 5), dtype=np.float32), per_item=1)
