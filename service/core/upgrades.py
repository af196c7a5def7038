"""Upgrades: training pairs, training jobs, activation and rollback of transformations.

An upgrade (old model -> new model) exists from the moment a successor model is registered. Its
training pairs are uploaded ones plus gallery items re-embedded into the new model (their old
vector is kept in item_history). Training runs as a durable job (service/core/jobs.py) that builds an
`UpgradeBundle` (adapters/bundle.py): the transformation, a reverse map, score calibration and a
backfill-order model, all evaluated on held-out pairs. A bundle that passes the empirical
compatibility criterion is activated at once; one that does not waits for an explicit, forced
activation. An upgrade with a training policy (`min_pairs`, `method`) trains by itself once that
many pairs exist (uploads and re-embedded items count), retrains each time the count doubles,
and a policy-trained transformation is activated only when it passes the ECC *and* beats the
active one on its own held-out pairs. Activation (and rollback: re-activating an older
transformation) is one database update followed by a routing-table swap, so queries switch
between two requests, never inside one.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from adapters import METHODS, create, servable
from adapters.bundle import HOLDOUT_FRACTION, UpgradeBundle, build_bundle, split_holdout
from adapters.evaluate import PRIMARY, EvalSet
from adapters.pair_selection import pairs_near_gallery
from service.core.bundle_files import bundle_directory, read_bundle_files
from service.core.catalog import Catalog
from service.core.errors import Conflict, Invalid, NotFound
from service.core.jobs import JobContext
from service.settings import Settings
from service.store import JobRecord, ModelRecord, Store, TransformationRecord, UpgradeRecord
from service.store.upgrades import PairSet, PartialLabels

log = logging.getLogger(__name__)

TRAIN_JOB = "train_upgrade"
SERVABLE_METHODS = servable()


class Upgrades:
    def __init__(self, store: Store, catalog: Catalog, settings: Settings,
                 on_activation: Callable[[], object] | None = None) -> None:
        self.store = store
        self.catalog = catalog
        self.settings = settings
        # The serving process reloads its routing table at once; a separate worker passes nothing
        # (servers notice the stored revision change within ROUTING_REFRESH_SECONDS).
        self.on_activation = on_activation or (lambda: None)
        self.on_job_queued = None  # the in-process worker's wake-up, when there is one

    @property
    def root(self) -> Path:
        return self.settings.data_dir / "transformations"

    def upgrade_into(self, model_id: int) -> UpgradeRecord | None:
        """The successor upgrade whose new model is `model_id`."""
        model = self.catalog.model_by_id(model_id)
        return next((u for u in self.store.list_upgrades()
                     if u.new_model_id == model_id and u.old_model_id == model.successor_of_id), None)

    def upgrade(self, upgrade_id: int) -> UpgradeRecord:
        found = self.store.get_upgrade(upgrade_id)
        if found is None:
            raise NotFound(f"unknown upgrade {upgrade_id}", "upgrade_id")
        return found

    def create_direct(self, old_name: str, new_name: str) -> UpgradeRecord:
        """An extra upgrade that skips versions (v1 -> v3); routing uses it where it measures better
        than the chain of successor upgrades."""
        old = self.catalog.model(old_name, field="old_model")
        new = self.catalog.model(new_name, field="new_model")
        ancestors, cursor = set(), new
        while cursor.successor_of_id is not None:
            ancestors.add(cursor.successor_of_id)
            cursor = self.catalog.model_by_id(cursor.successor_of_id)
        if old.id not in ancestors:
            raise Invalid(f"{new.name!r} is not a later version of {old.name!r} in one lineage", "new_model")
        created = self.store.create_upgrade(old.id, new.id)
        if created is None:
            raise Conflict(f"an upgrade {old.name!r} -> {new.name!r} already exists", "new_model")
        return created

    # ---- pairs --------------------------------------------------------------------------------
    def add_pairs(
        self, upgrade: UpgradeRecord, keys: list[str] | None, old: np.ndarray, new: np.ndarray,
        labels: list[str] | None,
    ) -> tuple[int, int]:
        if keys is not None:
            if len(keys) != len(old):
                raise Invalid(f"has {len(keys)} ids for {len(old)} pairs", "ids")
            dupes = len(keys) - len(set(keys))
            if dupes:
                raise Invalid(f"contains {dupes} repeated id(s)", "ids")
        if labels is not None and len(labels) != len(old):
            raise Invalid(f"has {len(labels)} labels for {len(old)} pairs", "labels")
        try:
            return self.store.add_pairs(upgrade.id, keys, old, new, labels)
        except PartialLabels as exc:
            raise Invalid(f"would leave the upgrade's pairs partly labelled: {exc}", "labels") from None

    # ---- training policy ----------------------------------------------------------------------
    def check_policy(self, min_pairs: int, method: str) -> None:
        """Refuse a policy that could never train (before anything is written)."""
        _check_method(method, "training.method")
        if min_pairs < self.settings.min_training_pairs:
            raise Invalid(f"must be at least {self.settings.min_training_pairs} (MIN_TRAINING_PAIRS)",
                          "training.min_pairs")

    def set_policy(self, upgrade: UpgradeRecord, min_pairs: int | None, method: str = "auto",
                   near_gallery: int | None = None) -> UpgradeRecord:
        """Train by itself from `min_pairs` pairs on (None: on request only); checked at once.
        `near_gallery`: its trainings fit on the pairs nearest the gallery (as a request's fit_near_gallery)."""
        if min_pairs is not None:
            self.check_policy(min_pairs, method)
        updated = self.store.set_policy(upgrade.id, min_pairs, method if min_pairs is not None else None,
                                        near_gallery)
        self.train_if_due(updated)
        return updated

    def train_if_due(self, upgrade: UpgradeRecord) -> JobRecord | None:
        """Start the policy's training when it is due and none of this upgrade's is queued or running."""
        if upgrade.policy_min_pairs is None:
            return None
        counts = self.store.pair_counts(upgrade)
        total = counts["uploaded"] + counts["from_items"]
        if total < upgrade.policy_min_pairs or total < 2 * upgrade.policy_trained_pairs:
            return None
        subject = f"upgrade:{upgrade.id}"
        if any(self.store.list_jobs(subject=subject, state=state, limit=1) for state in ("queued", "running")):
            return None  # the next write checks again
        if not self.store.claim_policy_training(upgrade.id, total):
            return None  # another process started it
        job = self._queue_training(upgrade, upgrade.policy_method or "auto", {}, None, 0, trigger="policy",
                                   near_gallery=upgrade.policy_near_gallery)
        log.info("upgrade %s: training policy started job %s at %d pairs", upgrade.id, job.id, total)
        return job

    def after_items_written(self, model_id: int) -> None:
        """Re-embedded items are pairs: let the policies of upgrades into `model_id` see the new count.
        Never fails the write that called it (it is committed already)."""
        for upgrade in self.store.list_upgrades():
            if upgrade.new_model_id == model_id and upgrade.policy_min_pairs is not None:
                try:
                    self.train_if_due(upgrade)
                except Exception:
                    log.exception("upgrade %s: training policy check failed; the next write retries", upgrade.id)

    # ---- training -----------------------------------------------------------------------------
    def start_training(
        self, upgrade: UpgradeRecord, method: str, params: dict[str, Any], label_field: str | None, seed: int,
        near_gallery: int | None = None,
    ) -> JobRecord:
        _check_method(method, "method")
        try:
            create(method, **params)
        except (TypeError, ValueError) as exc:
            raise Invalid(str(exc), "params") from None
        counts = self.store.pair_counts(upgrade)
        total = counts["uploaded"] + counts["from_items"]
        if total < self.settings.min_training_pairs:
            raise Conflict(
                f"upgrade {upgrade.id} has {total} training pairs ({counts['uploaded']} uploaded, "
                f"{counts['from_items']} from re-embedded items); training needs at least "
                f"{self.settings.min_training_pairs}", "pairs")
        coverage = self.store.label_coverage(upgrade, label_field)
        if coverage.partial:
            raise Invalid(coverage.describe(), "label_field")
        spec = METHODS[method].cls
        if spec.needs_labels and coverage.labelled == 0:
            raise Invalid(f"{method} needs labels on the training pairs ({spec.label_requirement}); these "
                          f"{coverage.pairs} pairs have none", "method")
        return self._queue_training(upgrade, method, params, label_field, seed, trigger="request",
                                    near_gallery=near_gallery)

    def _queue_training(self, upgrade: UpgradeRecord, method: str, params: dict[str, Any], label_field: str | None,
                        seed: int, trigger: str, near_gallery: int | None = None) -> JobRecord:
        job = self.store.create_job(
            TRAIN_JOB, f"upgrade:{upgrade.id}",
            {"upgrade_id": upgrade.id, "method": method, "params": params, "label_field": label_field, "seed": seed,
             "trigger": trigger, "near_gallery": near_gallery},
            max_attempts=self.settings.job_max_attempts,
        )
        if self.on_job_queued is not None:
            self.on_job_queued()
        return job

    def run_training(self, ctx: JobContext) -> dict[str, Any]:
        """The job handler: pairs -> bundle -> files -> transformation row -> maybe activation."""
        p = ctx.job.params
        upgrade = self.upgrade(p["upgrade_id"])
        old_model = self.catalog.model_by_id(upgrade.old_model_id)
        new_model = self.catalog.model_by_id(upgrade.new_model_id)
        ctx.progress(0.01, "loading training pairs")
        pairs = self.store.load_pairs(upgrade, old_model.dim, new_model.dim, p.get("label_field"))
        trigger = p.get("trigger", "request")
        coverage = self.store.label_coverage(upgrade, p.get("label_field"))
        if coverage.partial:  # a policy-started run cannot answer 422; it says why it trains without labels
            ctx.log(f"training without labels: {coverage.describe()}")
        ctx.log(f"{len(pairs.old)} pairs ({pairs.uploaded} uploaded, {pairs.from_items} from re-embedded items), "
                f"labels: {'yes' if pairs.labels is not None else 'no'}; started by "
                f"{'the training policy' if trigger == 'policy' else 'a request'}")
        if len(pairs.old) < self.settings.min_training_pairs:
            raise ValueError(f"only {len(pairs.old)} training pairs; need {self.settings.min_training_pairs}")
        near = None
        if p.get("near_gallery"):
            ctx.progress(0.015, "choosing the pairs nearest the gallery")
            pairs, near = self._pairs_near_gallery(ctx, pairs, old_model, int(p["near_gallery"]), int(p.get("seed", 0)))
        _limit_torch_threads(self.settings.job_threads)
        bundle = build_bundle(
            pairs.old, pairs.new, pairs.labels, method=p["method"], params=p.get("params") or {},
            metric_old=old_model.metric, metric_new=new_model.metric, seed=int(p.get("seed", 0)),
            max_holdout=self.settings.max_holdout_pairs,
            progress=lambda f, m: ctx.progress(0.02 + 0.93 * f, m),
        )
        ev = bundle.evaluation
        ev["pairs"].update(uploaded=pairs.uploaded, from_items=pairs.from_items)
        if near is not None:
            ev["pairs"]["near_gallery"] = near
        new_old = ev["rows"]["new/old"]
        ctx.log(f"{ev['selected']}: new/old mAP@R {new_old['mAP@R']:.4f} (old/old "
                f"{ev['rows']['old/old']['mAP@R']:.4f}, new/new {ev['rows']['new/new']['mAP@R']:.4f}); "
                f"ECC {'passed' if ev['ecc'] else 'NOT passed'}; gap closed {_fmt(ev['gap_closed'])}")
        if ev.get("hedged_from"):
            ctx.log(f"auto: picked {ev['hedged_from']}, a closed form, and serves it as the hedge (the adjoint's "
                    "and Procrustes' queries blended): the training pairs cannot show whether the gallery's "
                    "categories are new, which decides between them")
        if ev.get("hedge_declined"):
            ctx.log(f"auto: serves {ev['selected']} itself, not the hedge: {ev['hedge_declined']['note']}")
        if ev.get("stayed_at_start"):
            ctx.log(f"{ev['selected']} stayed at start: no training step improved on its initialisation, so it "
                    "is that initialisation (e.g. Procrustes) under another name")
        for name, why in ev.get("candidates_not_ranked", {}).items():
            ctx.log(f"auto: {name} not ranked: {why['note']}")
        ctx.progress(0.96, "saving the transformation")
        relative = Path(f"u{upgrade.id}") / f"job{ctx.job.id}-{uuid.uuid4().hex[:8]}"
        staging = self.root / (str(relative) + ".partial")
        bundle.save(staging)
        staging.rename(self.root / relative)  # complete files appear at once
        record = self.store.add_transformation(upgrade.id, ctx.job.id, ev["selected"],
                                               str(Path("transformations") / relative), bundle.passes_ecc, ev,
                                               files=read_bundle_files(self.root / relative))
        activated = False
        versus = self._versus_active(self.upgrade(upgrade.id), bundle, pairs, int(p.get("seed", 0))) \
            if trigger == "policy" else None
        if not bundle.passes_ecc:
            ctx.log(f"transformation {record.id} does not pass the ECC: not activated (activate with force)")
        elif versus is not None and not versus["beats_active"]:
            ctx.log(f"transformation {record.id} passes the ECC but does not beat the active transformation "
                    f"{versus['active']} on its held-out pairs (new/old {PRIMARY} {versus['new']:.4f} vs "
                    f"{versus['active_score']:.4f}): not activated")
        else:
            self.activate(upgrade, record.id, force=False)
            activated = True
            ctx.log(f"transformation {record.id} passes the ECC: activated")
        return {"transformation_id": record.id, "activated": activated, "passes_ecc": bundle.passes_ecc,
                "selected": ev["selected"], "gap_closed": ev["gap_closed"], "trigger": trigger,
                "versus_active": versus}

    def _pairs_near_gallery(self, ctx: JobContext, pairs: PairSet, old_model: ModelRecord, per_item: int,
                            seed: int) -> tuple[PairSet, dict[str, Any]]:
        """The pairs nearest (by the old model) to a sample of the items still in the old version: the
        gallery this map's queries are answered against (adapters/pair_selection.py says why). All
        pairs are kept, and the report says so, when that leaves fewer than a training job accepts."""
        gallery = self.store.sample_gallery(old_model.id, old_model.dim, self.settings.training_gallery_sample, seed)
        report: dict[str, Any] = {"per_item": per_item, "gallery_sampled": len(gallery), "pairs_before": len(pairs.old)}
        rows = pairs_near_gallery(pairs.old, gallery, per_item) if len(gallery) else None
        if rows is None or len(rows) < self.settings.min_training_pairs:
            why = "no item is still in the old version" if rows is None else (
                f"only {len(rows)} pairs lie near the gallery (need {self.settings.min_training_pairs})")
            ctx.log(f"fit_near_gallery: {why}; fitting on every pair")
            return pairs, {**report, "applied": False, "pairs_kept": len(pairs.old)}
        ctx.log(f"fit_near_gallery: {len(rows)} of {len(pairs.old)} pairs are among the {per_item} nearest of "
                f"{len(gallery)} sampled gallery items; fitting on those")
        return pairs.subset(rows), {**report, "applied": True, "pairs_kept": len(rows)}

    def _versus_active(self, upgrade: UpgradeRecord, bundle: UpgradeBundle, pairs, seed: int) -> dict | None:
        """The active transformation scored on the new bundle's held-out pairs (None: nothing active).

        The active map may have trained on some of those pairs (they were fewer then), which can only
        flatter it: a retrain that wins here wins despite that."""
        if upgrade.active_transformation_id is None:
            return None
        active = self.store.get_transformation(upgrade.active_transformation_id)
        incumbent = UpgradeBundle.load(bundle_directory(self.store, self.settings.data_dir, active))
        _, hold = split_holdout(len(pairs.old), HOLDOUT_FRACTION, self.settings.max_holdout_pairs, seed)
        test = EvalSet(pairs.old[hold], pairs.new[hold], None if pairs.labels is None else pairs.labels[hold])
        active_score = test.metrics(incumbent.new_to_old(test.new), test.old).as_dict()[PRIMARY]
        new_score = bundle.evaluation["rows"]["new/old"][PRIMARY]
        return {"active": active.id, "active_score": float(active_score), "new": float(new_score),
                "beats_active": bool(new_score > active_score)}

    # ---- activation ---------------------------------------------------------------------------
    def transformation(self, upgrade: UpgradeRecord, transformation_id: int | None) -> TransformationRecord:
        if transformation_id is None:
            records = self.store.list_transformations(upgrade.id)
            if not records:
                raise Conflict(f"upgrade {upgrade.id} has no trained transformation yet", "transformation")
            return records[-1]
        found = self.store.get_transformation(transformation_id)
        if found is None or found.upgrade_id != upgrade.id:
            raise NotFound(f"upgrade {upgrade.id} has no transformation {transformation_id}", "transformation")
        return found

    def activate(self, upgrade: UpgradeRecord, transformation_id: int | None, force: bool) -> UpgradeRecord:
        record = self.transformation(upgrade, transformation_id)
        if not record.passes_ecc and not force:
            raise Conflict(
                f"transformation {record.id} does not pass the compatibility criterion on held-out pairs "
                f"(new/old mAP@R {record.evaluation['rows']['new/old']['mAP@R']:.4f} <= old/old "
                f"{record.evaluation['rows']['old/old']['mAP@R']:.4f}); send force=true to activate it anyway",
                "force")
        if not bundle_directory(self.store, self.settings.data_dir, record).exists():  # from the database if need be
            raise Conflict(f"the files of transformation {record.id} are missing", "transformation")
        updated = self.store.activate(upgrade.id, record.id)
        self.on_activation()
        log.info("upgrade %s: transformation %s active", upgrade.id, record.id)
        return updated

    def deactivate(self, upgrade: UpgradeRecord) -> UpgradeRecord:
        updated = self.store.activate(upgrade.id, None)
        self.on_activation()
        return updated

    def discard_partial_files(self) -> None:
        """Remove bundles a crash left half-written (never referenced from the database). Only old
        ones: a separate worker may be writing one right now."""
        cutoff = time.time() - self.settings.job_stale_seconds
        for partial in self.root.glob("u*/*.partial"):
            if partial.stat().st_mtime < cutoff:
                shutil.rmtree(partial, ignore_errors=True)


def _check_method(method: str, field: str) -> None:
    if method not in SERVABLE_METHODS:
        raise Invalid(f"unknown or unservable method {method!r}; choose from {', '.join(SERVABLE_METHODS)}", field)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _limit_torch_threads(threads: int) -> None:
    """Keep training from taking every core away from query serving."""
    import torch

    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
