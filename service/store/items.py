"""Storage of models, collections and items (with the vectors items held in earlier models)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from service.store.membership import chunks, member_of
from service.store.tables import Collection, CollectionRetirement, Item, ItemHistory, ModelVersion, Upgrade, utcnow

VECTOR_DTYPE = np.dtype("<f4")


# Hot-path statements, built once (an expanding IN parameter keeps them cacheable for any length).
_IDS = bindparam("ids", expanding=True)
_HITS = select(Item.id, Item.collection_id, Item.key, Item.model_id).where(Item.id.in_(_IDS))
_HITS_WITH_PAYLOAD = select(Item.id, Item.collection_id, Item.key, Item.model_id, Item.payload).where(
    Item.id.in_(_IDS)
)
_VECTORS = select(Item.id, Item.collection_id, Item.model_id, Item.vector).where(Item.id.in_(_IDS))
_KEPT = select(ItemHistory.item_id, ItemHistory.model_id).where(ItemHistory.item_id.in_(_IDS))


class AlreadyExists(Exception):
    """A unique name is taken."""


@dataclass(frozen=True)
class ModelRecord:
    id: int
    name: str
    dim: int
    metric: str
    successor_of_id: int | None
    description: str | None
    created_at: datetime


@dataclass(frozen=True)
class CollectionRecord:
    id: int
    name: str
    base_model_id: int
    index_spec: dict
    seq: int
    created_at: datetime


@dataclass(frozen=True)
class ItemRecord:
    key: str
    model_id: int
    seq: int
    vector: np.ndarray
    payload: dict | None
    updated_at: datetime


@dataclass(frozen=True)
class HitRecord:
    """What a query needs of a hit: its key, payload, and every model it has a vector in.

    `models` is the current model plus the models whose vectors were kept when it was re-embedded
    (item_history): a query serves each item from the best of these (service/core/merge.py).
    """

    key: str
    model_id: int
    payload: dict | None
    models: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if self.model_id not in self.models:
            object.__setattr__(self, "models", self.models | {self.model_id})


@dataclass(frozen=True)
class UpsertOutcome:
    """What one committed upsert changed.

    `ids` are the items' row ids (the ids the index stores), aligned with the request;
    `replaced` maps model id -> row ids whose previous vector (in that model) must leave the index
    (the written model itself for rewrites; models whose vectors the write did not keep);
    `kept` counts items whose previous-model vector stays searchable beside the new one;
    `tag` is the collection's change counter after this write; `models` (aligned with `ids`) is
    what each item's `HitRecord.models` is after the write, so the caller can cache its record.
    """

    ids: np.ndarray
    created: int
    updated: int
    replaced: dict[int, np.ndarray]
    tag: int
    kept: int = 0
    models: list[frozenset[int]] = field(default_factory=list)  # per item, every model it now has a vector in


def encode_vector(vec: np.ndarray) -> bytes:
    return np.ascontiguousarray(vec, dtype=VECTOR_DTYPE).tobytes()


def decode_vectors(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.empty((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=VECTOR_DTYPE).reshape(len(blobs), dim).astype(np.float32)


def _model(row: ModelVersion) -> ModelRecord:
    return ModelRecord(row.id, row.name, row.dim, row.metric, row.successor_of_id, row.description, row.created_at)


def _collection(row: Collection) -> CollectionRecord:
    return CollectionRecord(row.id, row.name, row.base_model_id, dict(row.index_spec or {}), row.seq, row.created_at)


class ItemStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def ping(self) -> None:
        with self._sessions() as s:
            s.execute(select(1))

    # ---- models -------------------------------------------------------------------------------
    def create_model(
        self, name: str, dim: int, metric: str, successor_of_id: int | None, description: str | None
    ) -> ModelRecord:
        with self._sessions.begin() as s:
            row = ModelVersion(
                name=name, dim=dim, metric=metric, successor_of_id=successor_of_id, description=description
            )
            s.add(row)
            try:
                s.flush()
            except IntegrityError as exc:
                raise AlreadyExists(name) from exc
            if successor_of_id is not None:  # a successor always comes with its upgrade, atomically
                s.add(Upgrade(old_model_id=successor_of_id, new_model_id=row.id, revision=0))
            return _model(row)

    def get_model(self, name: str) -> ModelRecord | None:
        with self._sessions() as s:
            row = s.scalar(select(ModelVersion).where(ModelVersion.name == name))
            return _model(row) if row else None

    def list_models(self) -> list[ModelRecord]:
        with self._sessions() as s:
            return [_model(r) for r in s.scalars(select(ModelVersion).order_by(ModelVersion.id))]

    # ---- collections --------------------------------------------------------------------------
    def create_collection(self, name: str, base_model_id: int, index_spec: dict) -> CollectionRecord:
        with self._sessions.begin() as s:
            row = Collection(name=name, base_model_id=base_model_id, index_spec=index_spec, seq=0)
            s.add(row)
            try:
                s.flush()
            except IntegrityError as exc:
                raise AlreadyExists(name) from exc
            return _collection(row)

    def get_collection(self, name: str) -> CollectionRecord | None:
        with self._sessions() as s:
            row = s.scalar(select(Collection).where(Collection.name == name))
            return _collection(row) if row else None

    def collection_seq(self, collection_id: int) -> int | None:
        """The collection's change counter (None: no such collection): one primary-key read."""
        with self._sessions() as s:
            return s.scalar(select(Collection.seq).where(Collection.id == collection_id))

    def items_changed_after(self, collection_id: int, seq: int, limit: int) -> list[int] | None:
        """Row ids of the items written after change `seq`; None when more than `limit` were."""
        query = (select(Item.id).where(Item.collection_id == collection_id, Item.seq > seq).limit(limit + 1))
        with self._sessions() as s:
            ids = list(s.scalars(query))
        return None if len(ids) > limit else ids

    def list_collections(self) -> list[CollectionRecord]:
        with self._sessions() as s:
            return [_collection(r) for r in s.scalars(select(Collection).order_by(Collection.id))]

    def item_counts(self, collection_id: int) -> dict[int, int]:
        """Items per model version (the model each item's current vector was made by)."""
        with self._sessions() as s:
            rows = s.execute(
                select(Item.model_id, func.count())
                .where(Item.collection_id == collection_id)
                .group_by(Item.model_id)
            )
            return {model_id: int(n) for model_id, n in rows}

    # ---- items --------------------------------------------------------------------------------
    def upsert_items(
        self,
        collection_id: int,
        model_id: int,
        keys: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict | None],
        keep_models: frozenset[int] = frozenset(),
    ) -> UpsertOutcome:
        """Insert or replace a batch in one transaction: all of it is committed or none of it.

        An existing item's vectors in models of `keep_models` stay (its previous current vector is
        copied to item_history and stays indexed); its vectors in any other model are dropped. The
        caller decides the set (gallery.py: a re-embedding keeps older versions, a content change
        keeps none, a write never keeps versions newer than the one written).
        """
        n = len(keys)
        now = utcnow()
        with self._sessions.begin() as s:
            # Reserve n sequence numbers; the row lock (PostgreSQL) / write lock (SQLite) taken here
            # also serialises concurrent writers to the same collection.
            top = s.execute(
                update(Collection)
                .where(Collection.id == collection_id)
                .values(seq=Collection.seq + n)
                .returning(Collection.seq)
            ).scalar_one()
            seqs = range(top - n + 1, top + 1)
            existing = self._rows_by_key(s, collection_id, keys)
            history = self._history_models(s, [row_id for row_id, _ in existing.values()])
            inserts, updates = [], []
            replaced: dict[int, list[int]] = {}
            to_history: dict[int, list[int]] = {}
            drop_history: dict[int, list[int]] = {}  # model -> rows whose kept vector in it goes
            ids = np.zeros(n, dtype=np.int64)
            models: list[frozenset[int]] = [frozenset((model_id,))] * n
            new_positions = []
            for pos, (key, vec, payload, seq) in enumerate(zip(keys, vectors, payloads, seqs, strict=True)):
                values = {"model_id": model_id, "seq": seq, "vector": encode_vector(vec), "payload": payload,
                          "updated_at": now}
                if key in existing:
                    row_id, old_model = existing[key]
                    still = {model_id}
                    if old_model == model_id or old_model not in keep_models:
                        replaced.setdefault(old_model, []).append(row_id)
                    else:
                        to_history.setdefault(old_model, []).append(row_id)
                        still.add(old_model)
                    for kept_model in history.get(row_id, ()):
                        if kept_model == model_id or kept_model not in keep_models:
                            drop_history.setdefault(kept_model, []).append(row_id)
                            replaced.setdefault(kept_model, []).append(row_id)
                        else:
                            still.add(kept_model)
                    models[pos] = frozenset(still)
                    updates.append({"id": row_id, **values})
                    ids[pos] = row_id
                else:
                    inserts.append({"collection_id": collection_id, "key": key, **values})
                    new_positions.append(pos)
            for kept_model, row_ids in drop_history.items():
                for members in member_of(s, ItemHistory.item_id, row_ids):
                    s.execute(delete(ItemHistory).where(members, ItemHistory.model_id == kept_model))
            for old_model, row_ids in to_history.items():
                self._keep_previous_vectors(s, old_model, row_ids)
            if updates:
                s.execute(update(Item), updates)
            if inserts:
                ids[new_positions] = self._insert_new_items(s, collection_id, inserts)
        return UpsertOutcome(
            ids=ids,
            created=len(inserts),
            updated=len(updates),
            replaced={m: np.unique(np.array(v, dtype=np.int64)) for m, v in replaced.items()},
            tag=top,
            kept=sum(len(v) for v in to_history.values()),
            models=models,
        )

    @staticmethod
    def _insert_new_items(s, collection_id: int, rows: list[dict]) -> list[int]:
        """Insert rows of new items; their row ids, in the rows' order.

        One executemany without RETURNING, then the ids read back by (collection, key) through the
        unique index. `INSERT ... RETURNING` with the ids in parameter order made SQLAlchemy run one
        statement per row on SQLite (no insert sentinel there): 5,000 executes for a 5,000-item
        batch, most of the SQL share of a write in #19's ingest profile. The transaction holds the
        collection's lock, so no other writer can insert these keys meanwhile."""
        s.connection().execute(insert(Item.__table__), rows)  # Core: no per-row ORM bookkeeping
        keys = [row["key"] for row in rows]
        row_of = ItemStore._rows_by_key(s, collection_id, keys)
        return [row_of[key][0] for key in keys]

    @staticmethod
    def _rows_by_key(s, collection_id: int, keys: Sequence[str]) -> dict[str, tuple[int, int]]:
        """key -> (row id, current model) of the collection's items with those keys (a write looks
        its keys up twice: which exist, then the ids of those it inserted)."""
        out: dict[str, tuple[int, int]] = {}
        for members in member_of(s, Item.key, keys):
            for row_id, key, model_id in s.execute(select(Item.id, Item.key, Item.model_id).where(
                    Item.collection_id == collection_id, members)):
                out[key] = (row_id, model_id)
        return out

    @staticmethod
    def _history_models(s, row_ids: list[int]) -> dict[int, list[int]]:
        """row id -> models whose vectors item_history keeps for it."""
        out: dict[int, list[int]] = {}
        for members in member_of(s, ItemHistory.item_id, row_ids):
            for item_id, kept_model in s.execute(select(ItemHistory.item_id, ItemHistory.model_id).where(members)):
                out.setdefault(item_id, []).append(kept_model)
        return out

    @staticmethod
    def _keep_previous_vectors(s, old_model: int, row_ids: list[int]) -> None:
        """Copy the vectors that are about to be replaced into item_history (inside the database)."""
        for members in member_of(s, ItemHistory.item_id, row_ids):
            s.execute(delete(ItemHistory).where(members, ItemHistory.model_id == old_model))
        for members in member_of(s, Item.id, row_ids):
            s.execute(insert(ItemHistory).from_select(
                ["item_id", "model_id", "vector"], select(Item.id, Item.model_id, Item.vector).where(members)))

    def retired_models(self, collection_id: int) -> set[int]:
        with self._sessions() as s:
            return set(s.scalars(select(CollectionRetirement.model_id).where(
                CollectionRetirement.collection_id == collection_id)))

    def retire_model(self, collection_id: int, model_id: int) -> int:
        """Mark a model retired in a collection and drop the history vectors kept for it.

        Returns how many items still hold a vector in that model (the caller refuses when > 0);
        nothing changes in that case.
        """
        with self._sessions.begin() as s:
            remaining = s.scalar(select(func.count()).select_from(Item).where(
                Item.collection_id == collection_id, Item.model_id == model_id))
            if remaining:
                return int(remaining)
            if s.get(CollectionRetirement, (collection_id, model_id)) is None:
                s.add(CollectionRetirement(collection_id=collection_id, model_id=model_id))
            s.execute(delete(ItemHistory).where(
                ItemHistory.model_id == model_id,
                ItemHistory.item_id.in_(select(Item.id).where(Item.collection_id == collection_id))))
            return 0

    def delete_item(self, collection_id: int, key: str) -> tuple[list[int], int, int] | None:
        """Delete an item with every kept vector; return (models it had vectors in, current first;
        row id; new collection tag), or None if absent."""
        with self._sessions.begin() as s:
            row = s.execute(
                select(Item.id, Item.model_id).where(Item.collection_id == collection_id, Item.key == key)
            ).first()
            if row is None:
                return None
            tag = s.execute(
                update(Collection)
                .where(Collection.id == collection_id)
                .values(seq=Collection.seq + 1)
                .returning(Collection.seq)
            ).scalar_one()
            kept = self._history_models(s, [row.id]).get(row.id, [])
            s.execute(delete(ItemHistory).where(ItemHistory.item_id == row.id))
            s.execute(Item.__table__.delete().where(Item.id == row.id))
            return [row.model_id, *sorted(kept)], row.id, tag

    def get_item(self, collection_id: int, key: str, dim_of: Callable[[int], int]) -> ItemRecord | None:
        """The item and its vector; `dim_of(model id)` gives the width to decode it with."""
        with self._sessions() as s:
            row = s.scalar(select(Item).where(Item.collection_id == collection_id, Item.key == key))
            if row is None:
                return None
            vec = decode_vectors([row.vector], dim_of(row.model_id))[0]
            return ItemRecord(row.key, row.model_id, row.seq, vec, row.payload, row.updated_at)

    def hits_by_id(self, collection_id: int, ids: Sequence[int], with_payload: bool = True) -> dict[int, HitRecord]:
        """Resolve index ids (item row ids) to items; ids of deleted items are absent."""
        # Filter on the primary key only and check the collection here: with both in the WHERE
        # clause SQLite's planner may pick the (collection_id, ...) index and scan the collection.
        statement = _HITS_WITH_PAYLOAD if with_payload else _HITS
        out: dict[int, HitRecord] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(list(ids)):
                rows = [row for row in conn.execute(statement, {"ids": list(chunk)})
                        if row.collection_id == collection_id]
                kept: dict[int, set[int]] = {}
                if rows:
                    for item_id, model_id in conn.execute(_KEPT, {"ids": [row.id for row in rows]}):
                        kept.setdefault(item_id, set()).add(model_id)
                for row in rows:
                    out[row.id] = HitRecord(row.key, row.model_id, row.payload if with_payload else None,
                                            frozenset(kept.get(row.id, ())))
        return out

    def partition_ids(self, collection_id: int, model_id: int, changed_after: int | None = None,
                      current_only: bool = False) -> np.ndarray:
        """Sorted row ids of the items with a vector in `model_id`: their current one, or one kept
        from before a re-embedding (unless `current_only`); optionally only items written after a tag."""
        query = select(Item.id).where(Item.collection_id == collection_id, Item.model_id == model_id)
        kept = (select(Item.id).join(ItemHistory, ItemHistory.item_id == Item.id)
                .where(Item.collection_id == collection_id, ItemHistory.model_id == model_id))
        if changed_after is not None:
            query = query.where(Item.seq > changed_after)
            kept = kept.where(Item.seq > changed_after)
        # Core rows, not ORM objects: a restart reads every partition's ids (100k: 0.06 s, 0.15-0.24 s via the ORM)
        with self.engine.connect() as conn:
            ids = np.fromiter(conn.execute(query).scalars(), dtype=np.int64)
            if not current_only:
                ids = np.concatenate([ids, np.fromiter(conn.execute(kept).scalars(), dtype=np.int64)])
        return np.sort(ids)

    def kept_counts(self, collection_id: int) -> dict[int, int]:
        """Per model: items whose vector in it is kept beside a newer current one (item_history)."""
        with self._sessions() as s:
            rows = s.execute(
                select(ItemHistory.model_id, func.count())
                .join(Item, Item.id == ItemHistory.item_id)
                .where(Item.collection_id == collection_id)
                .group_by(ItemHistory.model_id)
            )
            return {model_id: int(n) for model_id, n in rows}

    def vectors_by_id(self, collection_id: int, model_id: int, ids: Sequence[int],
                      dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(row ids found, their vectors in `model_id`: current or kept) for the given row ids."""
        found: list[int] = []
        blobs: list[bytes] = []
        history = select(ItemHistory.item_id, ItemHistory.vector).where(
            ItemHistory.item_id.in_(_IDS), ItemHistory.model_id == model_id)
        with self.engine.connect() as conn:
            for chunk in chunks(list(ids)):
                others = []
                for row_id, owner, current_model, blob in conn.execute(_VECTORS, {"ids": list(chunk)}):
                    if owner != collection_id:  # primary-key lookup only; see hits_by_id
                        continue
                    if current_model == model_id:
                        found.append(row_id)
                        blobs.append(blob)
                    else:
                        others.append(row_id)
                if others:
                    for row_id, blob in conn.execute(history, {"ids": others}):
                        found.append(row_id)
                        blobs.append(blob)
        return np.asarray(found, dtype=np.int64), decode_vectors(blobs, dim)
