"""A writer-preferring readers/writer lock.

Every backend gives each collection one of these: searches share it, writes take it exclusively,
so a search in this process never sees a batch half-applied (FAISS indexes are also unsafe to
search while being mutated; Milvus needs it for the cross-collection order of a move). Writer
preference stops a steady stream of queries from starving ingest.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class CollectionLocks:
    """One ReadWriteLock per collection id, created on first use (what every backend keeps)."""

    def __init__(self) -> None:
        self._locks: dict[int, ReadWriteLock] = {}
        self._guard = threading.Lock()

    def __call__(self, collection: int) -> ReadWriteLock:
        with self._guard:
            lock = self._locks.get(collection)
            if lock is None:
                lock = self._locks[collection] = ReadWriteLock()
            return lock
