"""/v1/models: register and list encoder versions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, status

from service import deps
from service.auth import require_admin, require_reader
from service.registry import Registry
from service.schemas import ModelCreate, ModelOut
from service.store import ModelRecord

router = APIRouter(prefix="/v1/models", tags=["models"])


def model_out(model: ModelRecord, registry: Registry) -> ModelOut:
    parent = registry.model_by_id(model.successor_of_id).name if model.successor_of_id else None
    return ModelOut(
        name=model.name,
        dim=model.dim,
        metric=model.metric,
        successor_of=parent,
        description=model.description,
        created_at=model.created_at,
        lineage=[m.name for m in registry.lineage(model)],
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ModelOut, dependencies=[Depends(require_admin)])
def create_model(body: ModelCreate, registry: Registry = Depends(deps.registry)) -> ModelOut:
    model = registry.create_model(body.name, body.dim, body.metric, body.successor_of, body.description)
    return model_out(model, registry)


@router.get("", response_model=list[ModelOut], dependencies=[Depends(require_reader)])
def list_models(registry: Registry = Depends(deps.registry)) -> list[ModelOut]:
    return [model_out(m, registry) for m in registry.models()]


@router.get("/{name}", response_model=ModelOut, dependencies=[Depends(require_reader)])
def get_model(name: str, registry: Registry = Depends(deps.registry)) -> ModelOut:
    return model_out(registry.model(name, field="name"), registry)


@router.get("/{name}/compatibility", dependencies=[Depends(require_reader)])
def compatibility(name: str, request: Request, registry: Registry = Depends(deps.registry)) -> dict:
    """Compatibility matrix of the model's lineage (query model x gallery model), with AC and AM."""
    return request.app.state.compat.compute(registry.model(name, field="name"))
