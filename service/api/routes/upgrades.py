"""/v1/upgrades: training pairs, training jobs, activation and rollback of transformations."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from service.api import deps
from service.api.auth import require_admin, require_reader
from service.api.ids import UpgradeId
from service.api.json_body import JsonBody
from service.api.openapi import errors
from service.api.routes.jobs import job_out
from service.api.schemas import (
    ActivateRequest,
    JobOut,
    PairsOut,
    PairsUpload,
    TrainingPolicy,
    TrainingPolicyOut,
    TrainRequest,
    TransformationOut,
    UpgradeCreate,
    UpgradeOut,
)
from service.api.vectors import read_matrix
from service.core.catalog import Catalog
from service.core.errors import Invalid
from service.core.upgrades import TRAIN_JOB, Upgrades
from service.store import UpgradeRecord

router = APIRouter(prefix="/v1/upgrades", tags=["upgrades"])


def upgrade_out(upgrade: UpgradeRecord, upgrades: Upgrades, catalog: Catalog) -> UpgradeOut:
    store = upgrades.store
    transformations = [
        TransformationOut(id=t.id, method=t.method, job_id=t.job_id, passes_ecc=t.passes_ecc,
                          active=t.id == upgrade.active_transformation_id, created_at=t.created_at,
                          activated_at=t.activated_at, evaluation=t.evaluation)
        for t in store.list_transformations(upgrade.id)
    ]
    jobs = [j.id for j in store.list_jobs(subject=f"upgrade:{upgrade.id}") if j.kind == TRAIN_JOB]
    return UpgradeOut(
        id=upgrade.id,
        old_model=catalog.model_by_id(upgrade.old_model_id).name,
        new_model=catalog.model_by_id(upgrade.new_model_id).name,
        active_transformation=upgrade.active_transformation_id,
        pairs=store.pair_counts(upgrade),
        transformations=transformations,
        jobs=jobs,
        training=None if upgrade.policy is None else TrainingPolicyOut(**upgrade.policy),
        created_at=upgrade.created_at,
        updated_at=upgrade.updated_at,
    )


@router.get("", response_model=list[UpgradeOut], dependencies=[Depends(require_reader)])
def list_upgrades(upgrades: deps.UpgradesDep, catalog: deps.CatalogDep):
    return [upgrade_out(u, upgrades, catalog) for u in upgrades.store.list_upgrades()]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UpgradeOut,
             dependencies=[Depends(require_admin)], responses=errors(404, 409))
def create_upgrade(body: JsonBody(UpgradeCreate), upgrades: deps.UpgradesDep,
                   catalog: deps.CatalogDep) -> UpgradeOut:
    """A direct upgrade that skips versions (successor upgrades are created with the model)."""
    return upgrade_out(upgrades.create_direct(body.old_model, body.new_model), upgrades, catalog)


@router.get("/{upgrade_id}", response_model=UpgradeOut, dependencies=[Depends(require_reader)])
def get_upgrade(upgrade_id: UpgradeId, upgrades: deps.UpgradesDep,
                catalog: deps.CatalogDep) -> UpgradeOut:
    return upgrade_out(upgrades.upgrade(upgrade_id), upgrades, catalog)


@router.post("/{upgrade_id}/pairs", response_model=PairsOut, dependencies=[Depends(require_admin)])
def upload_pairs(
    upgrade_id: UpgradeId,
    body: JsonBody(PairsUpload),
    upgrades: deps.UpgradesDep,
    catalog: deps.CatalogDep,
    settings: deps.SettingsDep,
) -> PairsOut:
    upgrade = upgrades.upgrade(upgrade_id)
    d_old = catalog.model_by_id(upgrade.old_model_id).dim
    d_new = catalog.model_by_id(upgrade.new_model_id).dim
    limit = settings.max_batch_items
    old = read_matrix(body.old_vectors, body.old_vectors_b64, d_old, "old_vectors", "old_vectors_b64", limit)
    new = read_matrix(body.new_vectors, body.new_vectors_b64, d_new, "new_vectors", "new_vectors_b64", limit)
    if len(old) != len(new):
        field = "new_vectors" if body.new_vectors is not None else "new_vectors_b64"
        raise Invalid(f"has {len(new)} rows but the old side has {len(old)}; rows must be paired", field)
    labels = None if body.labels is None else [str(v) for v in body.labels]
    created, replaced = upgrades.add_pairs(upgrade, body.ids, old, new, labels)
    upgrades.train_if_due(upgrades.upgrade(upgrade.id))
    return PairsOut(upgrade_id=upgrade.id, received=len(old), created=created, replaced=replaced,
                    pairs=upgrades.store.pair_counts(upgrade))


@router.put("/{upgrade_id}/training", response_model=UpgradeOut, dependencies=[Depends(require_admin)])
def set_training_policy(upgrade_id: UpgradeId, body: JsonBody(TrainingPolicy), upgrades: deps.UpgradesDep,
                        catalog: deps.CatalogDep) -> UpgradeOut:
    """Train by itself from `min_pairs` pairs on, and again as they double (starts at once if due)."""
    updated = upgrades.set_policy(upgrades.upgrade(upgrade_id), body.min_pairs, body.method, body.fit_near_gallery)
    return upgrade_out(updated, upgrades, catalog)


@router.delete("/{upgrade_id}/training", response_model=UpgradeOut, dependencies=[Depends(require_admin)])
def clear_training_policy(upgrade_id: UpgradeId, upgrades: deps.UpgradesDep, catalog: deps.CatalogDep) -> UpgradeOut:
    """Back to training on request only (a running job finishes)."""
    return upgrade_out(upgrades.set_policy(upgrades.upgrade(upgrade_id), None), upgrades, catalog)


@router.post("/{upgrade_id}/train", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
             dependencies=[Depends(require_admin)], responses=errors(409))
def train(upgrade_id: UpgradeId, body: JsonBody(TrainRequest), upgrades: deps.UpgradesDep) -> JobOut:
    """Queue a training job; follow it at /v1/jobs/{id} (or `nobackfill jobs watch ID`)."""
    job = upgrades.start_training(upgrades.upgrade(upgrade_id), body.method, body.params, body.label_field,
                                  body.seed, near_gallery=body.fit_near_gallery)
    return job_out(job)


@router.post("/{upgrade_id}/activate", response_model=UpgradeOut, dependencies=[Depends(require_admin)],
             responses=errors(409))
def activate(upgrade_id: UpgradeId, body: JsonBody(ActivateRequest), upgrades: deps.UpgradesDep,
             catalog: deps.CatalogDep) -> UpgradeOut:
    """Make a transformation active (also the way to roll back to an earlier one)."""
    updated = upgrades.activate(upgrades.upgrade(upgrade_id), body.transformation, body.force)
    return upgrade_out(updated, upgrades, catalog)


@router.post("/{upgrade_id}/deactivate", response_model=UpgradeOut, dependencies=[Depends(require_admin)])
def deactivate(upgrade_id: UpgradeId, upgrades: deps.UpgradesDep,
               catalog: deps.CatalogDep) -> UpgradeOut:
    """Serve without any transformation for this upgrade (cross-version partitions become unreachable)."""
    return upgrade_out(upgrades.deactivate(upgrades.upgrade(upgrade_id)), upgrades, catalog)
