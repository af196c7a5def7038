"""Storage of upgrades, their training pairs and their trained transformations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import delete, func, insert, select, update

from service.store.items import decode_vectors, encode_vector
from service.store.membership import member_of
from service.store.tables import (
    Item,
    ItemHistory,
    Transformation,
    TransformationFile,
    Upgrade,
    UpgradePair,
    utcnow,
)

GALLERY_FETCH_CHUNK = 5_000  # item ids per IN (...) when sampling a gallery's vectors


@dataclass(frozen=True)
class UpgradeRecord:
    id: int
    old_model_id: int
    new_model_id: int
    active_transformation_id: int | None
    revision: int
    created_at: datetime
    updated_at: datetime
    policy_min_pairs: int | None = None  # None: trains on request only
    policy_method: str | None = None
    policy_trained_pairs: int = 0  # pair count at the last training the policy started
    policy_near_gallery: int | None = None  # policy-started trainings fit near the gallery with this m

    @property
    def policy(self) -> dict | None:
        """The training policy as the API and dashboard show it (None: trains on request only)."""
        if self.policy_min_pairs is None:
            return None
        return {"min_pairs": self.policy_min_pairs, "method": self.policy_method or "auto",
                "fit_near_gallery": self.policy_near_gallery, "trained_at_pairs": self.policy_trained_pairs}


@dataclass(frozen=True)
class TransformationRecord:
    id: int
    upgrade_id: int
    job_id: int | None
    method: str
    path: str
    passes_ecc: bool
    evaluation: dict
    created_at: datetime
    activated_at: datetime | None


class PartialLabels(ValueError):
    """Some of an upgrade's pairs have labels and some do not."""

    def __init__(self, coverage: LabelCoverage) -> None:
        super().__init__(coverage.describe())
        self.coverage = coverage


@dataclass
class PairSet:
    """Training pairs of an upgrade: rows of `old` and `new` embed the same item."""

    old: np.ndarray
    new: np.ndarray
    labels: np.ndarray | None  # only when every pair has one
    uploaded: int
    from_items: int

    def subset(self, rows: np.ndarray) -> PairSet:
        """The pairs at `rows` (sorted indices), counted by where they came from."""
        labels = None if self.labels is None else self.labels[rows]
        return PairSet(old=self.old[rows], new=self.new[rows], labels=labels,
                       uploaded=int(np.count_nonzero(rows < self.uploaded)),
                       from_items=int(np.count_nonzero(rows >= self.uploaded)))


@dataclass(frozen=True)
class LabelCoverage:
    """How many of an upgrade's training pairs carry a class label, and the first that does not.

    Label-aware losses need a label on every pair; a set where only some have one is refused rather
    than trained without labels behind the caller's back."""

    pairs: int
    labelled: int
    first_unlabelled: str | None  # e.g. "uploaded pair 300 (id 'p300')" or "item 'x'"

    @property
    def partial(self) -> bool:
        return 0 < self.labelled < self.pairs

    def describe(self) -> str:
        return (f"{self.labelled} of {self.pairs} training pairs have a label but {self.first_unlabelled} has "
                f"none; give every pair a label, or none")


def _upgrade(row: Upgrade) -> UpgradeRecord:
    return UpgradeRecord(row.id, row.old_model_id, row.new_model_id, row.active_transformation_id, row.revision,
                         row.created_at, row.updated_at, row.policy_min_pairs, row.policy_method,
                         row.policy_trained_pairs or 0, row.policy_near_gallery)


def _transformation(row: Transformation) -> TransformationRecord:
    return TransformationRecord(row.id, row.upgrade_id, row.job_id, row.method, row.path, row.passes_ecc,
                                dict(row.evaluation or {}), row.created_at, row.activated_at)


class UpgradeStore:
    # ---- upgrades -----------------------------------------------------------------------------
    def list_upgrades(self) -> list[UpgradeRecord]:
        with self._sessions() as s:
            return [_upgrade(r) for r in s.scalars(select(Upgrade).order_by(Upgrade.id))]

    def create_upgrade(self, old_model_id: int, new_model_id: int) -> UpgradeRecord | None:
        """A direct upgrade between two versions (e.g. v1 -> v3 beside v1 -> v2 -> v3); None if it exists."""
        with self._sessions.begin() as s:
            if s.scalar(select(Upgrade.id).where(Upgrade.old_model_id == old_model_id,
                                                 Upgrade.new_model_id == new_model_id)) is not None:
                return None
            row = Upgrade(old_model_id=old_model_id, new_model_id=new_model_id, revision=0)
            s.add(row)
            s.flush()
            return _upgrade(row)

    def set_policy(self, upgrade_id: int, min_pairs: int | None, method: str | None,
                   near_gallery: int | None = None) -> UpgradeRecord | None:
        """Set (or with None, clear) the training policy; the trigger count starts afresh."""
        with self._sessions.begin() as s:
            row = s.get(Upgrade, upgrade_id)
            if row is None:
                return None
            row.policy_min_pairs, row.policy_method, row.policy_trained_pairs = min_pairs, method, 0
            row.policy_near_gallery = near_gallery if min_pairs is not None else None
            row.updated_at = utcnow()
            s.flush()
            return _upgrade(row)

    def claim_policy_training(self, upgrade_id: int, pairs: int) -> bool:
        """Compare-and-set: record that the policy trains at `pairs` pairs, if it is due (at least
        `policy_min_pairs`, and at least twice the count of the last policy training). Exactly one
        of concurrent callers wins."""
        with self._sessions.begin() as s:
            done = s.execute(
                update(Upgrade)
                .where(Upgrade.id == upgrade_id, Upgrade.policy_min_pairs.is_not(None),
                       Upgrade.policy_min_pairs <= pairs, Upgrade.policy_trained_pairs * 2 <= pairs,
                       Upgrade.policy_trained_pairs < pairs)
                .values(policy_trained_pairs=pairs)
            )
            return done.rowcount == 1

    def get_upgrade(self, upgrade_id: int) -> UpgradeRecord | None:
        with self._sessions() as s:
            row = s.get(Upgrade, upgrade_id)
            return _upgrade(row) if row else None

    def serving_fingerprint(self) -> tuple[tuple[int, int], ...]:
        """(upgrade id, revision) for every upgrade: changes whenever any activation changes."""
        with self._sessions() as s:
            return tuple((int(i), int(r)) for i, r in s.execute(
                select(Upgrade.id, Upgrade.revision).order_by(Upgrade.id)))

    def activate(self, upgrade_id: int, transformation_id: int | None) -> UpgradeRecord:
        """Make `transformation_id` the upgrade's active one (None: no transformation), atomically."""
        now = utcnow()
        with self._sessions.begin() as s:
            s.execute(update(Upgrade).where(Upgrade.id == upgrade_id).values(
                active_transformation_id=transformation_id, revision=Upgrade.revision + 1, updated_at=now))
            if transformation_id is not None:
                s.execute(update(Transformation).where(Transformation.id == transformation_id).values(
                    activated_at=now))
            return _upgrade(s.get(Upgrade, upgrade_id))

    # ---- pairs --------------------------------------------------------------------------------
    def add_pairs(
        self,
        upgrade_id: int,
        keys: Sequence[str] | None,
        old: np.ndarray,
        new: np.ndarray,
        labels: Sequence[str] | None,
    ) -> tuple[int, int]:
        """Store a batch of pairs in one transaction; a pair with a known key replaces it.

        Returns (created, replaced).
        """
        replaced = 0
        with self._sessions.begin() as s:
            if keys is not None:
                for members in member_of(s, UpgradePair.key, keys):
                    replaced += s.execute(delete(UpgradePair).where(
                        UpgradePair.upgrade_id == upgrade_id, members)).rowcount
            rows = [
                {"upgrade_id": upgrade_id, "key": None if keys is None else keys[i],
                 "old_vector": encode_vector(old[i]), "new_vector": encode_vector(new[i]),
                 "label": None if labels is None else labels[i]}
                for i in range(len(old))
            ]
            s.execute(insert(UpgradePair), rows)
            coverage = self._uploaded_coverage(s, upgrade_id)
            if coverage.partial:  # raising rolls the batch back
                raise PartialLabels(coverage)
        return len(old) - replaced, replaced

    @staticmethod
    def _uploaded_coverage(s, upgrade_id: int) -> LabelCoverage:
        where = UpgradePair.upgrade_id == upgrade_id
        total = int(s.scalar(select(func.count()).select_from(UpgradePair).where(where)) or 0)
        labelled = int(s.scalar(select(func.count()).select_from(UpgradePair).where(
            where, UpgradePair.label.is_not(None))) or 0)
        first = None
        if labelled < total:
            pair_id, key = s.execute(select(UpgradePair.id, UpgradePair.key).where(where, UpgradePair.label.is_(None))
                                     .order_by(UpgradePair.id).limit(1)).one()
            position = int(s.scalar(select(func.count()).select_from(UpgradePair).where(
                where, UpgradePair.id < pair_id)) or 0)
            first = f"uploaded pair {position}" + (f" (id {key!r})" if key is not None else "")
        return LabelCoverage(total, labelled, first)

    def label_coverage(self, upgrade: UpgradeRecord, label_field: str | None) -> LabelCoverage:
        """Labels over every training pair `load_pairs` would return (uploads, then re-embedded items,
        labelled by `payload[label_field]`)."""
        with self._sessions() as s:
            uploaded = self._uploaded_coverage(s, upgrade.id)
            items = labelled_items = 0
            first = uploaded.first_unlabelled
            for key, payload in s.execute(
                select(Item.key, Item.payload).join(ItemHistory, Item.id == ItemHistory.item_id)
                .where(ItemHistory.model_id == upgrade.old_model_id, Item.model_id == upgrade.new_model_id)
                .order_by(Item.id)
            ):
                items += 1
                if label_field and (payload or {}).get(label_field) is not None:
                    labelled_items += 1
                elif first is None:
                    first = f"re-embedded item {key!r}" + ("" if label_field else " (no label_field given)")
        return LabelCoverage(uploaded.pairs + items, uploaded.labelled + labelled_items, first)

    def _item_pairs_query(self, old_model_id: int, new_model_id: int):
        return (
            select(ItemHistory.vector, Item.vector, Item.payload)
            .join(Item, Item.id == ItemHistory.item_id)
            .where(ItemHistory.model_id == old_model_id, Item.model_id == new_model_id)
        )

    def pair_counts(self, upgrade: UpgradeRecord) -> dict[str, int]:
        with self._sessions() as s:
            uploaded = s.scalar(select(func.count()).select_from(UpgradePair).where(
                UpgradePair.upgrade_id == upgrade.id))
            from_items = s.scalar(select(func.count()).select_from(
                self._item_pairs_query(upgrade.old_model_id, upgrade.new_model_id).subquery()))
        return {"uploaded": int(uploaded or 0), "from_items": int(from_items or 0)}

    def load_pairs(self, upgrade: UpgradeRecord, d_old: int, d_new: int, label_field: str | None) -> PairSet:
        """Every training pair of the upgrade: uploaded ones, then items re-embedded into the new model.

        Items' labels come from `payload[label_field]` when a field is named.
        """
        old_blobs: list[bytes] = []
        new_blobs: list[bytes] = []
        labels: list[str | None] = []
        with self._sessions() as s:
            for o, n, label in s.execute(
                select(UpgradePair.old_vector, UpgradePair.new_vector, UpgradePair.label)
                .where(UpgradePair.upgrade_id == upgrade.id).order_by(UpgradePair.id)
            ):
                old_blobs.append(o)
                new_blobs.append(n)
                labels.append(label)
            uploaded = len(old_blobs)
            for o, n, payload in s.execute(self._item_pairs_query(upgrade.old_model_id, upgrade.new_model_id)
                                           .order_by(Item.id)):
                old_blobs.append(o)
                new_blobs.append(n)
                value = (payload or {}).get(label_field) if label_field else None
                labels.append(None if value is None else str(value))
        have_labels = bool(labels) and all(label is not None for label in labels)
        return PairSet(
            old=decode_vectors(old_blobs, d_old),
            new=decode_vectors(new_blobs, d_new),
            labels=np.asarray(labels) if have_labels else None,
            uploaded=uploaded,
            from_items=len(old_blobs) - uploaded,
        )

    def sample_gallery(self, model_id: int, dim: int, limit: int, seed: int) -> np.ndarray:
        """Up to `limit` current vectors of items still in `model_id` (a seeded random sample): the
        gallery an upgrade's map serves new-model queries against, which training may fit near."""
        with self._sessions() as s:
            ids = np.fromiter(s.scalars(select(Item.id).where(Item.model_id == model_id).order_by(Item.id)),
                              dtype=np.int64)  # ordered: the seeded draw is the same on every database
            if len(ids) > limit:
                ids = np.sort(np.random.default_rng(seed).choice(ids, size=limit, replace=False))
            blobs: list[bytes] = []
            for start in range(0, len(ids), GALLERY_FETCH_CHUNK):
                chunk = ids[start : start + GALLERY_FETCH_CHUNK].tolist()
                blobs += s.scalars(select(Item.vector).where(Item.id.in_(chunk)).order_by(Item.id))
        return decode_vectors(blobs, dim)

    def keyed_pairs(self, upgrade: UpgradeRecord, d_old: int, d_new: int) -> tuple[list[str], np.ndarray,
                                                                                  np.ndarray, list[str | None]]:
        """Uploaded pairs that carry an id: (ids, old, new, labels) -- for joining across upgrades."""
        keys, olds, news, labels = [], [], [], []
        with self._sessions() as s:
            for key, o, n, label in s.execute(
                select(UpgradePair.key, UpgradePair.old_vector, UpgradePair.new_vector, UpgradePair.label)
                .where(UpgradePair.upgrade_id == upgrade.id, UpgradePair.key.is_not(None)).order_by(UpgradePair.id)
            ):
                keys.append(key)
                olds.append(o)
                news.append(n)
                labels.append(label)
        return keys, decode_vectors(olds, d_old), decode_vectors(news, d_new), labels

    # ---- transformations ----------------------------------------------------------------------
    def add_transformation(
        self, upgrade_id: int, job_id: int | None, method: str, path: str, passes_ecc: bool, evaluation: dict,
        files: Mapping[str, bytes] | None = None,
    ) -> TransformationRecord:
        """The transformation row and its bundle's files, in one transaction."""
        with self._sessions.begin() as s:
            row = Transformation(upgrade_id=upgrade_id, job_id=job_id, method=method, path=path,
                                 passes_ecc=passes_ecc, evaluation=evaluation)
            s.add(row)
            s.flush()
            for name, content in (files or {}).items():
                s.add(TransformationFile(transformation_id=row.id, name=name, content=content))
            return _transformation(row)

    def transformation_files(self, transformation_id: int) -> dict[str, bytes]:
        """The bundle's files by path inside its directory ({} for one trained before they were stored)."""
        query = select(TransformationFile.name, TransformationFile.content).where(
            TransformationFile.transformation_id == transformation_id)
        with self._sessions() as s:
            return {name: bytes(content) for name, content in s.execute(query)}

    def get_transformation(self, transformation_id: int) -> TransformationRecord | None:
        with self._sessions() as s:
            row = s.get(Transformation, transformation_id)
            return _transformation(row) if row else None

    def list_transformations(self, upgrade_id: int | None = None) -> list[TransformationRecord]:
        query = select(Transformation).order_by(Transformation.id)
        if upgrade_id is not None:
            query = query.where(Transformation.upgrade_id == upgrade_id)
        with self._sessions() as s:
            return [_transformation(r) for r in s.scalars(query)]
