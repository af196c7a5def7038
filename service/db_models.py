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

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:  # noqa: ANN001
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
    payload: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, nullable=False)
