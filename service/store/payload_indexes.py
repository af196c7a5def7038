"""Filtered item lookups and declared payload indexes.

`matching_item_ids` is the pre-filter of a filtered query: the row ids of a collection's items
whose payload matches, up to a limit (a query that matches more is post-filtered instead, so this
never reads a large part of a big collection). A payload index is an expression index per field
over exactly the expressions the compiled filter uses (payload_filter.py), created with
`CREATE INDEX CONCURRENTLY` on PostgreSQL so writes continue while it builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import delete, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from service.store import filters
from service.store.payload_filter import compile_filter, paths_for
from service.store.tables import Item, PayloadIndex


@dataclass(frozen=True)
class PayloadIndexRecord:
    id: int
    field: str
    created_at: datetime


def _index_names(index_id: int, count: int) -> list[str]:
    return [f"ix_payload_{index_id}" + ("" if i == 0 else "_num") for i in range(count)]


class PayloadIndexStore:
    engine: Engine

    def matching_item_ids(self, collection_id: int, where: filters.Node, limit: int) -> np.ndarray:
        """Sorted row ids of items whose payload matches, at most `limit` of them (callers ask for
        one more than they can use, to learn that there are more)."""
        statement = (select(Item.id).where(Item.collection_id == collection_id,
                                           compile_filter(where, self.engine.dialect.name))
                     .limit(limit))
        with self.engine.connect() as conn:
            ids = np.fromiter((row[0] for row in conn.execute(statement)), dtype=np.int64)
        ids.sort()
        return ids

    def payload_indexes(self, collection_id: int) -> list[PayloadIndexRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(PayloadIndex).where(PayloadIndex.collection_id == collection_id)
                                .order_by(PayloadIndex.id)).all()
        return [PayloadIndexRecord(r.id, r.field, r.created_at) for r in rows]

    def create_payload_index(self, collection_id: int, field: str) -> tuple[PayloadIndexRecord, bool]:
        """Declare and build the index of one payload field; (record, created). Idempotent."""
        expressions = paths_for(self.engine.dialect.name, tuple(field.split("."))).index_expressions()
        try:
            with self.engine.begin() as conn:
                index_id = conn.execute(PayloadIndex.__table__.insert().values(
                    collection_id=collection_id, field=field).returning(PayloadIndex.id)).scalar_one()
        except IntegrityError:
            existing = next(r for r in self.payload_indexes(collection_id) if r.field == field)
            self._build(existing.id, expressions)  # a crash may have left the row without its index
            return existing, False
        try:
            self._build(index_id, expressions)
        except Exception:
            with self.engine.begin() as conn:
                conn.execute(delete(PayloadIndex).where(PayloadIndex.id == index_id))
            raise
        return next(r for r in self.payload_indexes(collection_id) if r.id == index_id), True

    def _build(self, index_id: int, expressions: list[str]) -> None:
        postgres = self.engine.dialect.name == "postgresql"
        for name, expression in zip(_index_names(index_id, len(expressions)), expressions, strict=True):
            statement = (f"CREATE INDEX {'CONCURRENTLY ' if postgres else ''}IF NOT EXISTS {name} "
                         f"ON items (collection_id, ({expression}))")
            if postgres:  # CONCURRENTLY cannot run inside a transaction block
                with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    if _invalid(conn, name):
                        conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                    conn.execute(text(statement))
            else:
                with self.engine.begin() as conn:
                    conn.execute(text(statement))

    def drop_payload_index(self, collection_id: int, field: str) -> bool:
        record = next((r for r in self.payload_indexes(collection_id) if r.field == field), None)
        if record is None:
            return False
        postgres = self.engine.dialect.name == "postgresql"
        for name in _index_names(record.id, 2):
            if postgres:
                with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
            else:
                with self.engine.begin() as conn:
                    conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
        with self.engine.begin() as conn:
            conn.execute(delete(PayloadIndex).where(PayloadIndex.id == record.id))
        return True


def _invalid(conn, name: str) -> bool:
    """A CONCURRENTLY build that died leaves an INVALID index behind; it must be dropped and rebuilt."""
    return bool(conn.execute(text(
        "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = :n"),
        {"n": name}).scalar())
