"""The heap trimmer (service/core/heap_trim.py): once after a burst of writes, never during one,
and a real malloc_trim on this (glibc) machine."""

from __future__ import annotations

import time

from service.core.heap_trim import HeapTrimmer, _malloc_trim


def test_trims_once_writes_have_paused_and_not_before() -> None:
    calls = []
    trimmer = HeapTrimmer(idle_seconds=0.2, trim=lambda: calls.append(1))
    assert not trimmer.trim_if_idle(), "no write yet: nothing to return"
    trimmer.wrote()
    assert not trimmer.trim_if_idle(), "writes have not paused yet"
    time.sleep(0.25)
    assert trimmer.trim_if_idle() and calls == [1]
    assert not trimmer.trim_if_idle(), "one trim per burst"
    trimmer.wrote()
    time.sleep(0.25)
    assert trimmer.trim_if_idle() and calls == [1, 1]


def test_the_background_thread_trims_after_a_burst_and_stops() -> None:
    calls = []
    trimmer = HeapTrimmer(idle_seconds=0.1, trim=lambda: calls.append(1))
    trimmer.start()
    try:
        for _ in range(5):
            trimmer.wrote()
            time.sleep(0.02)
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.02)
        assert calls == [1]
    finally:
        trimmer.stop()


def test_disabled_by_zero_and_real_on_glibc() -> None:
    assert not HeapTrimmer(idle_seconds=0, trim=lambda: None).enabled
    trim = _malloc_trim()
    assert trim is not None, "glibc has malloc_trim"
    trim()  # returns freed pages; must not fail
