"""`column IN (values)` for any number of values, in as few statements as the database allows.

On PostgreSQL one condition binds all the values as one array (`column = ANY(:values)`): IN lists
of 500 parameters each cost a round trip and a plan of their own — half of a write's time on
PostgreSQL, with a scan of the collection per chunk before a new table's first ANALYZE
(docs/benchmarks.md, "Ingest"). SQLite has no arrays: IN chunks there, each well under every
driver's parameter limit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy import ARRAY, ColumnElement, any_, bindparam
from sqlalchemy.orm import Session

IN_CHUNK = 500


def chunks(seq: Sequence, size: int = IN_CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def member_of(s: Session, column, values: Sequence) -> list[ColumnElement[bool]]:
    """Conditions, one per statement to run, that together select the rows whose `column` is in `values`."""
    if s.get_bind().dialect.name == "postgresql":
        return [column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))]
    return [column.in_(chunk) for chunk in chunks(list(values))]
