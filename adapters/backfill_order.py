"""Which stored items to re-embed first: the ones that new-model queries, routed into the old
space, retrieve most often.

Under the slot merge (migration.py) a re-embedded item changes a new-model query's results only
through the positions it holds in that query's *routed* ranking: those positions are handed to
re-embedded items in the new model's own order. An item that sits in many routed top-k lists (a
hub of the routed ranking) therefore opens many top positions to the new model's ordering, and
re-embedding it early moves served quality toward the fully re-embedded state sooner.

The routed queries a gallery will see are estimated from the gallery itself: a sample of its old
vectors taken to the new space and back (old -> new -> old, the route a new-model query of a
similar item would take), searched against the old partition; an item's count is how many of
those proxy queries have it in their routed top `ROUTED_DEPTH` (each proxy's own item excluded).

Chosen by measurement (bench/backfill_order.py, docs/benchmarks.md) on WordNet-4k and a
WordNet-20k sample against a random order and FastFill's predicted-transformation-error order
(reliability.py), which was no better than random here. The rule speeds a migration toward the
re-embedded end either way: where the new model is better (the upgrades the service migrates by
slots) quality rises sooner; where it is not, the service keeps new-model queries on the route and
the order does not change what they get.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from adapters.calibration import scores

ROUTED_DEPTH = 10  # the routed top-k an item is counted in (top-1 alone measured about the same)
Map = Callable[[np.ndarray], np.ndarray]


def round_trip(old: np.ndarray, old_to_new: Map, new_to_old: Map) -> np.ndarray:
    """Proxy routed queries: old vectors taken into the new space and back again."""
    return np.ascontiguousarray(new_to_old(old_to_new(old)), dtype=np.float32)


def counted_hits(hit_ids: np.ndarray, proxy_ids: np.ndarray, depth: int = ROUTED_DEPTH) -> np.ndarray:
    """The ids among each proxy's first `depth` hits, its own item left out (hit_ids: (m, >= depth
    + 1) ids, best first, -1 where fewer matched), flattened: one entry per counted hit."""
    hit_ids = np.asarray(hit_ids, dtype=np.int64)
    usable = (hit_ids >= 0) & (hit_ids != np.asarray(proxy_ids, dtype=np.int64)[:, None])
    return hit_ids[usable & (np.cumsum(usable, axis=1) <= depth)]


def tally(counted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted ids, how often each was counted): `counted_hits` reduced once, looked up many times."""
    return np.unique(np.asarray(counted, dtype=np.int64), return_counts=True)


def hit_counts(candidates: np.ndarray, tallied: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Per candidate id, its count in `tallied` (0 if never counted)."""
    ids, counts = tallied
    candidates = np.asarray(candidates, dtype=np.int64)
    if not len(ids):
        return np.zeros(len(candidates), dtype=np.int64)
    pos = np.minimum(np.searchsorted(ids, candidates), len(ids) - 1)
    return np.where(ids[pos] == candidates, counts[pos], 0)


def hub_order(candidates: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """`candidates` (ids) most-retrieved first; ties (and never-retrieved items) by id, oldest first."""
    candidates = np.asarray(candidates, dtype=np.int64)
    return candidates[np.lexsort((candidates, -np.asarray(hits)))]


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """A fixed sorted sample of `size` of n rows (all rows when n <= size)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def routed_hits(old: np.ndarray, old_to_new: Map, new_to_old: Map, metric: str = "cosine",
                proxies: int = 5_000, depth: int = ROUTED_DEPTH, seed: int = 0) -> np.ndarray:
    """Per row of `old` (a whole gallery in memory), its routed hit count, by exact search in
    numpy: what the service counts through its index (service/core/backfill.py), for replays."""
    rows = sample_rows(len(old), proxies, seed)
    counted = []
    for start in range(0, len(rows), 1024):
        chunk = rows[start : start + 1024]
        s = scores(round_trip(old[chunk], old_to_new, new_to_old), old, metric)
        width = min(depth + 1, s.shape[1])
        top = np.argpartition(-s, width - 1, axis=1)[:, :width]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, axis=1), axis=1), axis=1)
        counted.append(counted_hits(top, chunk, depth))
    return hit_counts(np.arange(len(old)), tally(np.concatenate(counted)))


def routed_hub_order(old: np.ndarray, old_to_new: Map, new_to_old: Map, metric: str = "cosine",
                     seed: int = 0) -> np.ndarray:
    """Row order of `old` by routed hit count, most retrieved first (see `routed_hits`)."""
    return hub_order(np.arange(len(old)), routed_hits(old, old_to_new, new_to_old, metric, seed=seed))
