"""One ranking out of per-partition results: how a gallery that is partly re-embedded is served.

An item can hold vectors in several model versions at once (a re-embedding keeps the older
vector searchable until that version is retired, gallery.py), so a query in model Q may find the
same item in several partitions. Two rules make the merge safe at every migration level:

1. **Each item is served from its best representation for Q**: Q's own vector when it has one
   -- clients still on an old version are served from the kept old vectors, so their quality is
   what it was before the upgrade -- with one exception: when the route to the anchor's version
   (below) measured *clearly better* than Q's own vector on some metric (held-out pairs;
   adapters/migration.py has the thresholds), items stay on it, so what Q's clients had before
   any item moved is not taken from them (MiniLM -> e5 on WordNet: e5 queries through the map over
   MiniLM vectors beat e5's own mAP@R). Without Q's own vector, the best-measured route serves. A
   hit found through any other partition is dropped, so an item never appears twice.
   Serving old clients from re-embedded vectors through the reverse map where it measured better
   than their own model was tried and dropped: on 431 held-out pairs the static64 -> minilm reverse
   map looked no worse on top-1, and over the 4.3k gallery it cost old clients .06 top-1.

2. **Slots, not scores, decide where re-embedded items go.** The *anchor* is the searched
   partition holding the most items (ties: the oldest version); with kept vectors it is the oldest
   version still in service and holds every item. Its ranking places every item, including those
   better served elsewhere: the positions such items take become *slots* of the partition that
   serves them, and that partition's own ranking of its anchored items fills its slots in order. A new-model query over
   a half-migrated gallery therefore keeps the transformation's ranking of where re-embedded items
   belong and the new model's ranking of which of them go first: at 0 % re-embedded it is the
   transformation's ranking, at 100 % the new model's own, and no two score scales are compared
   in between (bench/merge_replay.py measured this against raw, calibrated and rank-percentile
   merges on two domains: the smallest and steadiest distance from the straight line between the
   two ends, docs/benchmarks.md).

Items with no vector in the anchor's version (written only in a newer version) have no slot;
they are merged by score, their routed scores put on Q's scale by the route's calibration
(calibration.py): the one place scores of two spaces still meet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from adapters.migration import METRICS, clearly_better
from service.store import HitRecord


@dataclass(frozen=True)
class PartitionHits:
    """One partition's answer to one query: ids best first (-1 = padding), scores on Q's scale."""

    model_id: int
    ids: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class Reach:
    """How a query reaches one partition: the route's held-out quality (PRIMARY), per metric, and
    the held-out pairs behind it (transform_graph.Route)."""

    quality: float
    ratios: Mapping[str, float]
    holdout_pairs: int

    @classmethod
    def native(cls) -> Reach:
        return cls(1.0, dict.fromkeys(METRICS, 1.0), 1 << 62)

    @property
    def clearly_better(self) -> bool:
        return clearly_better(dict(self.ratios), self.holdout_pairs)



@dataclass(frozen=True)
class MergedHit:
    item_id: int
    model_id: int  # the version whose vector served the item
    score: float  # that representation's score on the query model's scale


def serving_model(models: frozenset[int], query_model: int, reach: Mapping[int, Reach], anchor: int) -> int | None:
    """The version an item is served from for `query_model` among the searched partitions
    (`reach`: model id -> how the query gets there); None if none of its versions is searched."""
    available = [m for m in models if m in reach]
    if not available:
        return None
    if query_model in available:
        if anchor != query_model and anchor in available and reach[anchor].clearly_better:
            return anchor
        return query_model
    return max(available, key=lambda m: (reach[m].quality, -m))


def choose_anchor(sizes: Mapping[int, int], reach: Mapping[int, Reach]) -> int:
    """The searched partition with the most items; on a tie (every item re-embedded, old vectors
    still kept) the oldest version -- where the items were before the migration began (a model
    id is always higher than its predecessor's)."""
    return min(reach, key=lambda m: (-sizes.get(m, 0), m))


def merge_row(
    query_model: int,
    parts: Mapping[int, PartitionHits],
    reach: Mapping[int, Reach],
    sizes: Mapping[int, int],
    records: Mapping[int, HitRecord],
    k: int,
) -> list[MergedHit]:
    """Merge one query's per-partition hits into at most k hits (see module docstring)."""
    anchor = choose_anchor(sizes, reach)
    owner: dict[int, int | None] = {}
    # Partitions that answered with fewer than k hits and at least as many as they hold returned
    # every vector they have: an item missing there is not in that index (yet, or any more),
    # whatever its record says. (An ANN index may return fewer than k of a bigger partition.)
    returned = {mid: int((part.ids >= 0).sum()) for mid, part in parts.items()}
    exhaustive = {mid for mid, n in returned.items() if n < k and n >= sizes.get(mid, 0)}
    found_in: dict[int, set[int]] = {}  # only needed when some partition answered exhaustively
    if exhaustive:
        for mid, part in parts.items():
            for item_id in part.ids.tolist():
                if item_id >= 0:
                    found_in.setdefault(item_id, set()).add(mid)

    def served_from(item_id: int) -> int | None:
        if item_id not in owner:
            rec = records.get(item_id)
            best = None if rec is None else serving_model(rec.models, query_model, reach, anchor)
            if best in exhaustive and best not in found_in.get(item_id, ()):
                # mid-move: the database already lists the new version, its index does not hold the
                # vector yet (another process between its commit and its engine write): serve the
                # representation the engines do hold rather than lose the item for that instant
                best = serving_model(frozenset(found_in[item_id]), query_model, reach, anchor)
            owner[item_id] = best
        return owner[item_id]

    # Each other partition's own ranking of the items it serves: anchored ones fill slots, the rest float.
    queues: dict[int, list[tuple[float, int]]] = {}
    floating: list[tuple[float, int, int]] = []
    for mid, part in parts.items():
        if mid == anchor:
            continue
        queue = queues.setdefault(mid, [])
        for item_id, score in zip(part.ids.tolist(), part.scores.tolist(), strict=True):
            if item_id < 0 or served_from(item_id) != mid:
                continue
            if anchor in records[item_id].models:
                queue.append((score, item_id))
            else:
                floating.append((score, item_id, mid))

    # The anchor's ranking: its own items stay, the others' positions become their servers' slots.
    slotted: list[tuple[float, MergedHit]] = []  # (position score, hit)
    taken = {mid: 0 for mid in queues}
    if anchor in parts:  # a partition lists an id at most once
        part = parts[anchor]
        for item_id, score in zip(part.ids.tolist(), part.scores.tolist(), strict=True):
            if item_id < 0:
                continue
            mid = served_from(item_id)
            if mid == anchor:
                slotted.append((score, MergedHit(item_id, anchor, score)))
            elif mid in queues and taken[mid] < len(queues[mid]):
                fill_score, fill_id = queues[mid][taken[mid]]
                taken[mid] += 1
                slotted.append((score, MergedHit(fill_id, mid, fill_score)))

    # Items without an anchor vector join by score (two sorted lists, slotted first on ties).
    floating.sort(key=lambda t: -t[0])
    out: list[MergedHit] = []
    i = j = 0
    while len(out) < k and (i < len(slotted) or j < len(floating)):
        if j >= len(floating) or (i < len(slotted) and slotted[i][0] >= floating[j][0]):
            out.append(slotted[i][1])
            i += 1
        else:
            score, item_id, mid = floating[j]
            out.append(MergedHit(item_id, mid, score))
            j += 1
    return out
