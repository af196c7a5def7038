"""The index-writer lock and journal: consistent index writes when several processes share an
engine (service replicas over one PostgreSQL and one Milvus).

`index_writer(collection)` serialises, across processes, everything that changes a collection's
vectors in the engine (PostgreSQL: a session advisory lock keyed by the collection id, released
by PostgreSQL itself if the holder dies; SQLite: nothing beyond the process's own lock, since a
SQLite deployment is one process). Inside it a writer journals its write before committing and
clears the entry after the engine has it, so an entry seen by a later holder of the lock can only
be a write whose process died in between: the holder repairs the collection from that point.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, text
from sqlalchemy.engine import Connection, Engine

from service.store.tables import Collection, IndexJournal

_LOCK_NAMESPACE = 0x6E6266  # "nbf": the first key of pg_advisory_lock(int, int), the collection id second


@dataclass
class Journal:
    """The journal of one collection, usable while its index-writer lock is held."""

    engine: Engine
    collection_id: int

    def orphans(self) -> list[tuple[int, int]]:
        """(entry id, counter before its write) of writes whose process died before the engine had them."""
        query = select(IndexJournal.id, IndexJournal.seq_before).where(
            IndexJournal.collection_id == self.collection_id).order_by(IndexJournal.id)
        with self.engine.connect() as conn:
            return [(int(i), int(seq)) for i, seq in conn.execute(query)]

    def begin_write(self) -> int:
        """Journal a write about to happen; its entry id."""
        with self.engine.begin() as conn:
            seq = conn.scalar(select(Collection.seq).where(Collection.id == self.collection_id)) or 0
            return int(conn.execute(insert(IndexJournal).values(collection_id=self.collection_id, seq_before=seq)
                                    .returning(IndexJournal.id)).scalar_one())

    def clear(self, entry_ids: list[int]) -> None:
        if entry_ids:
            with self.engine.begin() as conn:
                conn.execute(delete(IndexJournal).where(IndexJournal.id.in_(entry_ids)))


class JournalStore:
    engine: Engine

    @contextmanager
    def index_writer(self, collection_id: int) -> Iterator[Journal]:
        """Hold the collection's index-writer lock (across processes on PostgreSQL)."""
        lock: Connection | None = None
        if self.engine.dialect.name == "postgresql":
            lock = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            lock.execute(text("select pg_advisory_lock(:ns, :id)"), {"ns": _LOCK_NAMESPACE, "id": collection_id})
        try:
            yield Journal(self.engine, collection_id)
        finally:
            if lock is not None:
                try:
                    lock.execute(text("select pg_advisory_unlock(:ns, :id)"),
                                 {"ns": _LOCK_NAMESPACE, "id": collection_id})
                except Exception:
                    lock.invalidate()  # never hand a connection that may still hold the lock back to the pool
                    raise
                finally:
                    lock.close()
