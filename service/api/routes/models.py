"""/v1/models: register and list encoder versions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from service.api import deps
from service.api.auth import require_admin, require_reader
from service.api.json_body import JsonBody
from service.api.openapi import errors
from service.api.schemas import ModelCreate, ModelOut
from service.core.catalog import Catalog
from service.core.errors import Invalid
from service.store import ModelRecord

router = APIRouter(prefix="/v1/models", tags=["models"])


def model_out(model: ModelRecord, catalog: Catalog) -> ModelOut:
    parent = catalog.model_by_id(model.successor_of_id).name if model.successor_of_id else None
    return ModelOut(
        name=model.name,
        dim=model.dim,
        metric=model.metric,
        successor_of=parent,
        description=model.description,
        created_at=model.created_at,
        lineage=[m.name for m in catalog.lineage(model)],
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ModelOut, dependencies=[Depends(require_admin)],
             responses=errors(404, 409))
def create_model(body: JsonBody(ModelCreate), catalog: deps.CatalogDep, upgrades: deps.UpgradesDep) -> ModelOut:
    if body.training is not None:
        if body.successor_of is None:
            raise Invalid("a training policy needs successor_of (it trains the upgrade from that model)", "training")
        upgrades.check_policy(body.training.min_pairs, body.training.method)
    model = catalog.create_model(body.name, body.dim, body.metric, body.successor_of, body.description)
    if body.training is not None:
        upgrades.set_policy(upgrades.upgrade_into(model.id), body.training.min_pairs, body.training.method,
                            body.training.fit_near_gallery)
    return model_out(model, catalog)


@router.get("", response_model=list[ModelOut], dependencies=[Depends(require_reader)])
def list_models(catalog: deps.CatalogDep) -> list[ModelOut]:
    return [model_out(m, catalog) for m in catalog.models()]


@router.get("/{name}", response_model=ModelOut, dependencies=[Depends(require_reader)])
def get_model(name: str, catalog: deps.CatalogDep) -> ModelOut:
    return model_out(catalog.model(name, field="name"), catalog)


@router.get("/{name}/compatibility", dependencies=[Depends(require_reader)])
def compatibility(name: str, catalog: deps.CatalogDep, compat: deps.CompatDep) -> dict:
    """Compatibility matrix of the model's lineage (query model x gallery model), with AC and AM."""
    return compat.compute(catalog.model(name, field="name"))
