"""The storage module: every SQL statement of the service lives in this package.

The rest of the service deals in plain dataclasses and numpy arrays, so the database (SQLite or
PostgreSQL) can change without touching routes or application logic. One `Store` object gives
access to all of it; the parts are split by subject (items, upgrades, jobs, sessions) only to keep files small.
"""

from __future__ import annotations

from service.store.items import (
    AlreadyExists,
    CollectionRecord,
    HitRecord,
    ItemRecord,
    ItemStore,
    ModelRecord,
    UpsertOutcome,
    decode_vectors,
    encode_vector,
)
from service.store.jobs import TERMINAL, JobRecord, JobStore
from service.store.journal import Journal, JournalStore
from service.store.payload_indexes import PayloadIndexRecord, PayloadIndexStore
from service.store.sessions import SessionRecord, SessionStore
from service.store.upgrades import PairSet, TransformationRecord, UpgradeRecord, UpgradeStore


class Store(ItemStore, UpgradeStore, JobStore, JournalStore, SessionStore, PayloadIndexStore):
    """All persistent state of the service (SQLite or PostgreSQL through SQLAlchemy)."""


__all__ = [
    "TERMINAL", "AlreadyExists", "CollectionRecord", "HitRecord", "ItemRecord", "JobRecord", "Journal",
    "ModelRecord", "PayloadIndexRecord",
    "PairSet", "SessionRecord", "Store", "TransformationRecord", "UpgradeRecord", "UpsertOutcome", "decode_vectors",
    "encode_vector",
]
