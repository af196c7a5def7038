"""SQLAlchemy table definitions: the schema Alembic migrations create.

Vectors live in the database (`items.vector`, little-endian float32 bytes) and nowhere else
durably: the database transaction is what makes an acknowledged write durable and a batch
all-or-nothing. FAISS indexes and their snapshot files are derived from these rows and can always be
rebuilt from them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer, "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator):
    """Timezone-aware UTC timestamps on every database (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class ModelVersion(Base):
    """A registered encoder version. `successor_of` links versions into a lineage."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    dim: Mapped[int] = mapped_column(Integer, nullable=False)
    metric: Mapped[str] = mapped_column(String(16), nullable=False)
    successor_of_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)


# Payloads are jsonb on PostgreSQL (type-exact equality and expression indexes for filters).
PayloadJSON = JSON().with_variant(JSONB(), "postgresql")


class Collection(Base):
    """A gallery. `seq` is its change counter: every written vector gets the next value."""

    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), nullable=False)
    index_spec: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)


class Item(Base):
    """One gallery item and its current vector.

    `id` (the row id) is the id the FAISS partitions store; it is stable for the item's life.
    `seq` is the collection change counter at the item's last write, so start-up repair can find
    the vectors written after an index snapshot was taken.
    """

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("collection_id", "key", name="uq_items_collection_key"),
        UniqueConstraint("collection_id", "seq", name="uq_items_collection_seq"),
        Index("ix_items_collection_model", "collection_id", "model_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), nullable=False)
    key: Mapped[str] = mapped_column(String(512), nullable=False)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    vector: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    payload: Mapped[dict | None] = mapped_column(PayloadJSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)


class PayloadIndex(Base):
    """A payload field a collection's filters use often, declared so the database indexes it
    (an expression index per field: service/store/payload_filter.py). `field` is the dotted path."""

    __tablename__ = "payload_indexes"
    __table_args__ = (UniqueConstraint("collection_id", "field", name="uq_payload_indexes_collection_field"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), nullable=False)
    field: Mapped[str] = mapped_column(String(520), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)


class ItemHistory(Base):
    """An item's vector in a model it has since left, kept when an upsert re-embeds it elsewhere.

    A kept vector stays in its model's index partition, so clients still querying with that model
    are served from it (no reverse map, no regression while a gallery migrates), and re-embedding
    an item turns it into a training pair for free. It is dropped when the operator retires that
    model version, when a write says the item's content changed (`previous_vectors: "drop"`), or
    when a write in an older version supersedes it.
    """

    __tablename__ = "item_history"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class CollectionRetirement(Base):
    """A model version retired from a collection: fully migrated, no longer accepted for writes."""

    __tablename__ = "collection_retirements"

    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    retired_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)


class Upgrade(Base):
    """old model -> new model: created when a model is registered with `successor_of`.

    `active_transformation_id` is the transformation queries use; changing it is the (atomic)
    activation or rollback. `revision` moves on every change so servers can notice cheaply.
    """

    __tablename__ = "upgrades"
    __table_args__ = (UniqueConstraint("old_model_id", "new_model_id", name="uq_upgrades_old_new"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    old_model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), nullable=False)
    new_model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), nullable=False)
    active_transformation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Training policy (None: train on request only): train once `policy_min_pairs` pairs exist,
    # again each time the count doubles since `policy_trained_pairs` (the count at the last trigger).
    policy_min_pairs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    policy_method: Mapped[str | None] = mapped_column(String(32), nullable=True)
    policy_trained_pairs: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    policy_near_gallery: Mapped[int | None] = mapped_column(Integer, nullable=True)  # fit_near_gallery's m
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)


class UpgradePair(Base):
    """One uploaded training pair: the same item embedded by the old and by the new model."""

    __tablename__ = "upgrade_pairs"
    __table_args__ = (UniqueConstraint("upgrade_id", "key", name="uq_upgrade_pairs_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    upgrade_id: Mapped[int] = mapped_column(ForeignKey("upgrades.id", ondelete="CASCADE"), nullable=False)
    key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    old_vector: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    new_vector: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    label: Mapped[str | None] = mapped_column(String(256), nullable=True)


class Transformation(Base):
    """A trained transformation of an upgrade: weights on disk (`path`), evaluation in the row."""

    __tablename__ = "transformations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    upgrade_id: Mapped[int] = mapped_column(ForeignKey("upgrades.id", ondelete="CASCADE"), nullable=False)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    method: Mapped[str] = mapped_column(String(32), nullable=False)
    path: Mapped[str] = mapped_column(String(1024), nullable=False)
    passes_ecc: Mapped[bool] = mapped_column(nullable=False)
    evaluation: Mapped[dict] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)
    activated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class IndexJournal(Base):
    """An index write in progress on a shared engine (Milvus): inserted before the database commit,
    deleted once the engine has the write. A row whose writer is gone (it can be seen only by
    someone holding the collection's index-writer lock, which its writer held) marks a write that
    may be in the database but not in the engine; whoever finds it repairs the collection from
    `seq_before` on (service/core/index_sync.py)."""

    __tablename__ = "index_journal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), nullable=False,
                                               index=True)
    seq_before: Mapped[int] = mapped_column(BigInteger, nullable=False)  # the collection's counter before it
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)


class TransformationFile(Base):
    """One file of a transformation's bundle (safetensors weights, JSON metadata), stored with it so
    that every service replica can serve it without a shared disk: each writes the bundle under
    its own DATA_DIR the first time it needs it (service/core/bundle_files.py)."""

    __tablename__ = "transformation_files"

    transformation_id: Mapped[int] = mapped_column(ForeignKey("transformations.id", ondelete="CASCADE"),
                                                   primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # path inside the bundle directory
    content: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class Job(Base):
    """A durable unit of long work (training, ...), claimed and run by a worker.

    States: queued -> running -> succeeded | failed | cancelled. A running job's worker refreshes
    `heartbeat_at`; a job whose heartbeat stops (its worker died) is re-queued or failed.
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    subject: Mapped[str | None] = mapped_column(String(128), nullable=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    progress: Mapped[float] = mapped_column(nullable=False, default=0.0)
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    params: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    log: Mapped[str] = mapped_column(Text, nullable=False, default="")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=2)
    cancel_requested: Mapped[bool] = mapped_column(nullable=False, default=False)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class DashboardSession(Base):
    """A dashboard login. The cookie carries a random token; only its SHA-256 is stored, so a copy
    of the database does not let anyone log in. A session ends when it expires, is revoked (logout,
    or an admin), or the keys change (`key_fingerprint` no longer matches)."""

    __tablename__ = "dashboard_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    key_fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    client: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    user_agent: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, index=True)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
