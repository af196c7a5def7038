"""The hit cache: misses load once, writes invalidate, and a fill raced by a write is not kept."""

from __future__ import annotations

from service.core.hit_cache import HitCache
from service.store import HitRecord


def test_hits_are_loaded_once_and_invalidated_by_writes() -> None:
    cache = HitCache(100)
    loads: list[list[int]] = []

    def load(ids: list[int]) -> dict[int, HitRecord]:
        loads.append(ids)
        return {i: HitRecord(f"k{i}", 1, {"v": len(loads)}) for i in ids if i != 3}  # 3 was deleted

    assert set(cache.resolve(7, [1, 2, 3], load)) == {1, 2}
    assert cache.resolve(7, [1, 2], load)[1].payload == {"v": 1} and loads == [[1, 2, 3]]
    cache.invalidate(7, [2])
    assert cache.resolve(7, [1, 2], load)[2].payload == {"v": 2} and loads[-1] == [2]
    assert cache.resolve(8, [1], load)[1].key == "k1", "collections are separate"


def test_a_fill_raced_by_a_write_is_dropped() -> None:
    cache = HitCache(100)

    def racing_load(ids: list[int]) -> dict[int, HitRecord]:
        cache.invalidate(1, ids)  # a write commits while the database read is in flight
        return {i: HitRecord("old", 1, {"stale": True}) for i in ids}

    cache.resolve(1, [5], racing_load)
    fresh = cache.resolve(1, [5], lambda ids: {i: HitRecord("new", 1, None) for i in ids})
    assert fresh[5].key == "new"


def test_disabled_cache_always_loads() -> None:
    cache = HitCache(0)
    calls = []
    cache.resolve(1, [1], lambda ids: calls.append(ids) or {})
    cache.resolve(1, [1], lambda ids: calls.append(ids) or {})
    assert len(calls) == 2


def test_records_written_through_are_served_and_invalidate_older_fills() -> None:
    cache = HitCache(100)
    cache.replace(1, {5: HitRecord("k5", 2, {"fresh": True}, frozenset({1}))})
    got = cache.resolve(1, [5], lambda ids: {i: HitRecord("db", 2, None) for i in ids})
    assert got[5].payload == {"fresh": True} and got[5].models == frozenset({1, 2})

    def racing_load(ids: list[int]) -> dict[int, HitRecord]:
        cache.replace(1, {i: HitRecord("written", 1, None) for i in ids})  # a writer commits meanwhile
        return {i: HitRecord("stale", 1, None) for i in ids}

    cache.resolve(1, [6], racing_load)
    assert cache.resolve(1, [6], lambda ids: {})[6].key == "written"
