"""The merge of per-partition hits (service/core/merge.py): best representation, slots, floating items."""

from __future__ import annotations

import numpy as np

from service.core.merge import PartitionHits, Reach, choose_anchor, merge_row, serving_model
from service.store import HitRecord

OLD, NEW = 1, 2


def part(model: int, ids: list[int], scores: list[float]) -> PartitionHits:
    return PartitionHits(model, np.array(ids, dtype=np.int64), np.array(scores, dtype=np.float32))


def reach(spec: dict[int, float | tuple[float, float]], holdout: int = 1_000) -> dict[int, Reach]:
    """model -> route quality: one number for both metrics, or (top-1, mAP@R) ratios."""
    out = {}
    for m, q in spec.items():
        top1, map_r = (q, q) if isinstance(q, float) else q
        out[m] = Reach(map_r, {"top1": top1, "mAP@R": map_r}, holdout)
    return out


def records(spec: dict[int, set[int]]) -> dict[int, HitRecord]:
    """item id -> the models it has vectors in (current = the newest)."""
    return {i: HitRecord(f"k{i}", max(models), None, frozenset(models)) for i, models in spec.items()}


def test_serving_model_prefers_the_query_model_then_the_best_route() -> None:
    both = frozenset({OLD, NEW})
    assert serving_model(both, NEW, reach({OLD: 0.9, NEW: 1.0}), anchor=OLD) == NEW
    assert serving_model(frozenset({OLD, 3}), NEW, reach({OLD: 0.9, NEW: 1.0, 3: 0.95}), anchor=OLD) == 3
    assert serving_model(frozenset({OLD}), NEW, reach({NEW: 1.0}), anchor=NEW) is None  # not searched
    assert choose_anchor({OLD: 100, NEW: 40}, reach({OLD: 0.9, NEW: 1.0})) == OLD
    # every item re-embedded, old vectors kept: the anchor stays the old version, whatever the routes
    assert choose_anchor({OLD: 100, NEW: 100}, reach({OLD: 1.0, NEW: 1.3})) == OLD
    # old clients keep their own vectors, however good the reverse map measured
    assert serving_model(both, OLD, reach({OLD: 1.0, NEW: 1.3}), anchor=OLD) == OLD
    # new clients keep the route they had before any item moved when it beat their own vector
    assert serving_model(both, NEW, reach({OLD: (0.97, 1.06), NEW: 1.0}), anchor=OLD) == OLD
    assert serving_model(both, NEW, reach({OLD: (0.97, 1.01), NEW: 1.0}), anchor=OLD) == NEW
    assert serving_model(both, NEW, reach({OLD: 1.06, NEW: 1.0}, holdout=48), anchor=OLD) == NEW  # too few pairs


def test_slots_keep_the_anchor_positions_and_fill_them_in_native_order() -> None:
    # every item has an old vector; 3 and 5 were re-embedded. The anchor (old, routed) ranks
    # 1, 3, 2, 5, 4: positions 2 and 4 are new-model slots, filled by the native order 5, 3.
    recs = records({1: {OLD}, 2: {OLD}, 3: {OLD, NEW}, 4: {OLD}, 5: {OLD, NEW}})
    parts = {OLD: part(OLD, [1, 3, 2, 5, 4], [0.9, 0.8, 0.7, 0.6, 0.5]),
             NEW: part(NEW, [5, 3], [0.95, 0.2])}
    hits = merge_row(NEW, parts, reach({OLD: 0.9, NEW: 1.0}), {OLD: 5, NEW: 2}, recs, k=5)
    assert [(h.item_id, h.model_id) for h in hits] == [(1, OLD), (5, NEW), (2, OLD), (3, NEW), (4, OLD)]
    assert hits[1].score == np.float32(0.95)  # the serving representation's own score


def test_no_migration_is_the_anchor_ranking_and_full_migration_the_native_one() -> None:
    recs = records({i: {OLD} for i in range(6)})
    anchor = part(OLD, [4, 2, 0, 5, 1, 3], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    zero = merge_row(NEW, {OLD: anchor}, reach({OLD: 0.9}), {OLD: 6}, recs, k=6)
    assert [h.item_id for h in zero] == [4, 2, 0, 5, 1, 3]
    recs = records({i: {OLD, NEW} for i in range(6)})
    native = part(NEW, [0, 1, 2, 3, 4, 5], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    full = merge_row(NEW, {OLD: anchor, NEW: native}, reach({OLD: 0.9, NEW: 1.0}), {OLD: 6, NEW: 6}, recs, k=6)
    assert [(h.item_id, h.model_id) for h in full] == [(i, NEW) for i in range(6)]


def test_old_clients_are_served_natively_and_drop_the_duplicates() -> None:
    # item 3 was re-embedded (old vector kept): the routed new-partition hit for it is a duplicate
    recs = records({1: {OLD}, 2: {OLD}, 3: {OLD, NEW}})
    parts = {OLD: part(OLD, [2, 3, 1], [0.9, 0.5, 0.1]), NEW: part(NEW, [3], [0.99])}
    hits = merge_row(OLD, parts, reach({OLD: 1.0, NEW: 0.8}), {OLD: 3, NEW: 1}, recs, k=3)
    assert [(h.item_id, h.model_id, round(h.score, 2)) for h in hits] == [(2, OLD, 0.9), (3, OLD, 0.5),
                                                                         (1, OLD, 0.1)]


def test_old_clients_stay_native_at_full_migration_when_the_reverse_map_only_wins_on_map_r() -> None:
    # all items re-embedded; the reverse map measured better mAP@R but worse top-1: keep old vectors
    recs = records({1: {OLD, NEW}, 2: {OLD, NEW}})
    parts = {OLD: part(OLD, [1, 2], [0.9, 0.5]), NEW: part(NEW, [2, 1], [0.8, 0.7])}
    hits = merge_row(OLD, parts, reach({OLD: 1.0, NEW: (0.8, 1.3)}), {OLD: 2, NEW: 2}, recs, k=2)
    assert [(h.item_id, h.model_id) for h in hits] == [(1, OLD), (2, OLD)]


def test_items_without_an_anchor_vector_are_merged_by_score() -> None:
    # 7 and 8 were written only in the new model: no slot; they join by (calibrated) score
    recs = records({1: {OLD}, 2: {OLD}, 3: {OLD, NEW}, 7: {NEW}, 8: {NEW}})
    parts = {OLD: part(OLD, [1, 3, 2], [0.9, 0.6, 0.3]), NEW: part(NEW, [7, 3, 8], [0.7, 0.65, 0.1])}
    hits = merge_row(NEW, parts, reach({OLD: 0.9, NEW: 1.0}), {OLD: 3, NEW: 3}, recs, k=10)
    assert [h.item_id for h in hits] == [1, 7, 3, 2, 8]
    assert len({h.item_id for h in hits}) == len(hits)


def test_deleted_items_and_padding_are_skipped_and_k_is_respected() -> None:
    recs = records({1: {OLD}, 3: {OLD}})  # 2 was deleted after the search
    parts = {OLD: part(OLD, [1, 2, 3, -1], [0.9, 0.8, 0.7, -np.inf])}
    assert [h.item_id for h in merge_row(OLD, parts, reach({OLD: 1.0}), {OLD: 2}, recs, k=10)] == [1, 3]
    assert [h.item_id for h in merge_row(OLD, parts, reach({OLD: 1.0}), {OLD: 2}, recs, k=1)] == [1]


def test_a_slot_with_no_native_candidate_left_is_dropped_not_duplicated() -> None:
    # the new partition returned only item 3; the anchor ranks two re-embedded items
    recs = records({1: {OLD}, 3: {OLD, NEW}, 5: {OLD, NEW}})
    parts = {OLD: part(OLD, [5, 1, 3], [0.9, 0.8, 0.7]), NEW: part(NEW, [3], [0.5])}
    hits = merge_row(NEW, parts, reach({OLD: 0.9, NEW: 1.0}), {OLD: 3, NEW: 2}, recs, k=3)
    assert [h.item_id for h in hits] == [3, 1]


def test_an_item_mid_move_is_served_from_the_index_that_holds_it() -> None:
    """Another process committed item 3's move to NEW (old vector dropped) and has not written it
    to NEW's index yet: NEW answered with everything it holds, without item 3, so item 3 is served
    from the OLD vector the index still has instead of vanishing for that instant."""
    recs = records({1: {OLD}, 3: {NEW}, 5: {OLD, NEW}})
    parts = {OLD: part(OLD, [3, 1, 5], [0.9, 0.8, 0.7]), NEW: part(NEW, [5], [0.5])}
    hits = merge_row(NEW, parts, reach({OLD: 0.9, NEW: 1.0}), {OLD: 3, NEW: 1}, recs, k=5)
    assert sorted(h.item_id for h in hits) == [1, 3, 5]
    assert {h.item_id: h.model_id for h in hits}[3] == OLD
