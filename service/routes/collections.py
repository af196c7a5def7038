"""/v1/collections: galleries, their items, and queries against them."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from index import IndexSpec
from service import deps
from service.auth import bearer, require_admin, require_reader
from service.backfill import Backfill
from service.errors import Invalid, TooLarge
from service.gallery import Gallery, QueryOutcome, SearchedPartition
from service.json_body import json_body, openapi_body
from service.registry import Registry
from service.schemas import (
    BackfillOut,
    CollectionCreate,
    CollectionOut,
    IndexOptions,
    ItemOut,
    PartitionOut,
    QueryOut,
    QueryRequest,
    RetireRequest,
    UpsertOut,
    UpsertRequest,
)
from service.settings import Settings
from service.store import CollectionRecord
from service.vectors import check_matrix, decode_b64, read_matrix, stack_rows

router = APIRouter(prefix="/v1/collections", tags=["collections"])


def collection_out(collection: CollectionRecord, registry: Registry, gallery: Gallery) -> CollectionOut:
    counts = registry.store.item_counts(collection.id)
    states = gallery.partition_states(collection) if gallery.ready.is_set() else {}
    return CollectionOut(
        name=collection.name,
        model=registry.model_by_id(collection.base_model_id).name,
        index=IndexOptions(**collection.index_spec),
        items=sum(counts.values()),
        items_per_model={registry.model_by_id(mid).name: n for mid, n in counts.items()},
        partitions=[PartitionOut(model=registry.model_by_id(mid).name, vectors=st.vectors, structure=st.structure,
                                 rebuilding=st.rebuilding) for mid, st in sorted(states.items())],
        created_at=collection.created_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CollectionOut,
             dependencies=[Depends(require_admin)])
def create_collection(body: CollectionCreate, registry: Registry = Depends(deps.registry),
                      gallery: Gallery = Depends(deps.gallery)) -> CollectionOut:
    spec = IndexSpec.from_dict(body.index.model_dump())
    return collection_out(registry.create_collection(body.name, body.model, spec), registry, gallery)


@router.get("", response_model=list[CollectionOut], dependencies=[Depends(require_reader)])
def list_collections(registry: Registry = Depends(deps.registry),
                     gallery: Gallery = Depends(deps.gallery)) -> list[CollectionOut]:
    return [collection_out(c, registry, gallery) for c in registry.collections()]


@router.get("/{name}", response_model=CollectionOut, dependencies=[Depends(require_reader)])
def get_collection(name: str, registry: Registry = Depends(deps.registry),
                   gallery: Gallery = Depends(deps.gallery)) -> CollectionOut:
    """The collection, its items per model version and each partition's index state."""
    return collection_out(registry.collection(name), registry, gallery)


# ---- items ---------------------------------------------------------------------------------------
@router.post("/{name}/items", response_model=UpsertOut, dependencies=[Depends(require_admin)],
             openapi_extra=openapi_body(UpsertRequest))
def upsert_items(
    name: str,
    body: UpsertRequest = Depends(json_body(UpsertRequest)),
    registry: Registry = Depends(deps.registry),
    gallery: Gallery = Depends(deps.gallery),
    settings: Settings = Depends(deps.settings),
) -> UpsertOut:
    collection = registry.collection(name)
    model = registry.model_for_collection(collection, body.model)
    if len(body.items) > settings.max_batch_items:
        raise TooLarge(f"has {len(body.items)} items; the limit is {settings.max_batch_items}", "items")
    fields, rows = [], []
    for i, item in enumerate(body.items):
        if item.vector_b64 is not None:
            fields.append(f"items[{i}].vector_b64")
            rows.append(decode_b64(item.vector_b64, fields[-1]))
        else:
            fields.append(f"items[{i}].vector")
            rows.append(np.asarray(item.vector, dtype=np.float32))
    vectors = stack_rows(rows, model.dim, fields)
    outcome = gallery.upsert(
        collection, model, [it.id for it in body.items], vectors, [it.payload for it in body.items]
    )
    return UpsertOut(model=model.name, received=len(body.items), created=outcome.created, updated=outcome.updated)


@router.get("/{name}/items/{item_id:path}", response_model=ItemOut, dependencies=[Depends(require_reader)])
def get_item(
    name: str,
    item_id: str,
    include_vector: bool = False,
    registry: Registry = Depends(deps.registry),
    gallery: Gallery = Depends(deps.gallery),
) -> ItemOut:
    item = gallery.get_item(registry.collection(name), item_id)
    return ItemOut(
        id=item.key,
        model=registry.model_by_id(item.model_id).name,
        payload=item.payload,
        updated_at=item.updated_at,
        vector=item.vector.tolist() if include_vector else None,
    )


@router.delete("/{name}/items/{item_id:path}", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=[Depends(require_admin)])
def delete_item(
    name: str, item_id: str, registry: Registry = Depends(deps.registry), gallery: Gallery = Depends(deps.gallery)
) -> Response:
    gallery.delete(registry.collection(name), item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- queries -------------------------------------------------------------------------------------
_parse_query = json_body(QueryRequest)


def _query_matrix(body: QueryRequest, dim: int, max_batch: int) -> np.ndarray:
    """The request's query vector(s) as an (n, dim) float32 matrix, validated."""
    if body.vector is not None:
        if len(body.vector) != dim:
            raise Invalid(f"has dimension {len(body.vector)}, the model expects {dim}", "vector")
        return check_matrix(np.asarray(body.vector, dtype=np.float32)[None, :], dim, "vector")
    if body.vector_b64 is not None:
        matrix = read_matrix(None, body.vector_b64, dim, "vector", "vector_b64", max_batch)
        if len(matrix) != 1:
            raise Invalid(f"holds {len(matrix)} vectors; use vectors_b64 for a batch", "vector_b64")
        return matrix
    return read_matrix(body.vectors, body.vectors_b64, dim, "vectors", "vectors_b64", max_batch)


@router.post("/{name}/query", response_model=QueryOut, response_model_exclude_none=True,
             dependencies=[Depends(require_reader)], openapi_extra=openapi_body(QueryRequest))
async def query(name: str, request: Request) -> JSONResponse:
    """Search the collection; one vector gives `hits`, a batch gives `results` (one per query).

    Small searches run on the event loop: a thread-pool hop costs more than a sub-millisecond
    FAISS search. Large ones (big flat partitions, big batches) go to the thread pool so that the
    loop keeps serving other requests and FAISS, which releases the GIL, can use every core.
    """
    body = await _parse_query(request)
    state = request.app.state
    registry, gallery, settings = state.registry, state.gallery, state.settings
    collection = registry.collection(name)
    model = registry.model_for_collection(collection, body.model)
    queries = _query_matrix(body, model.dim, settings.max_query_batch)
    sizes = gallery.partition_sizes(collection)
    args = (collection, model, queries, body.k, body.include_payload, sizes)
    if gallery.search_work(collection, sizes, len(queries)) <= settings.inline_search_work:
        outcome = gallery.query(*args)
    else:
        outcome = await run_in_threadpool(gallery.query, *args)
    return JSONResponse(_query_out(body, model.name, outcome, registry))


async def query_fast(request: Request) -> Response:
    """POST /v1/collections/{name}/query without FastAPI's per-request machinery.

    The documented route above resolves its dependencies and matches its path through FastAPI's
    router on every call (about a sixth of a millisecond: more than an HNSW search). app.py puts
    this plain Starlette route first in the routing table for the same path and method; it runs
    the same checks (the reader key) and the same endpoint function, and errors go through the
    app's exception handlers exactly as before. `scope["route"]` names the documented route so
    metrics keep one series for queries.
    """
    request.scope["route"] = fast_query_route
    await require_reader(request, await bearer(request))
    return await query(request.path_params["name"], request)


fast_query_route = Route(f"{router.prefix}/{{name}}/query", query_fast, methods=["POST"], include_in_schema=False)


def _searched(model_name: str, part: SearchedPartition, name_of) -> dict:
    out: dict = {"model": model_name, "items": part.items}
    if part.route.edges:
        out["route"] = [name_of(part.route.edges[0].src)] + [name_of(e.dst) for e in part.route.edges]
        out["transformations"] = [e.transformation_id for e in part.route.edges]
        out["score_map"] = {"a": part.route.score_map.a, "b": part.route.score_map.b}
    return out


def _query_out(body: QueryRequest, model_name: str, outcome: QueryOutcome, registry: Registry) -> dict:
    """The QueryOut body as plain data (built directly: this is the hot path)."""
    names: dict[int, str] = {}

    def name_of(model_id: int) -> str:
        if model_id not in names:
            names[model_id] = registry.model_by_id(model_id).name
        return names[model_id]

    def hit(h) -> dict:
        out = {"id": h.key, "score": h.score, "model": name_of(h.model_id)}
        if h.payload is not None:
            out["payload"] = h.payload
        return out

    results = [[hit(h) for h in row] for row in outcome.hits]
    out: dict = {
        "model": model_name,
        "k": body.k,
        "searched": [_searched(name_of(m), part, name_of) for m, part in outcome.searched.items()],
        "skipped": [
            {"model": name_of(m), "items": n, "reason": f"no active transformation path from {model_name!r}"}
            for m, n in outcome.skipped.items()
        ],
    }
    if body.is_batch:
        out["results"] = [{"hits": row} for row in results]
    else:
        out["hits"] = results[0]
    return out


# ---- backfill ------------------------------------------------------------------------------------
@router.get("/{name}/backfill", response_model=BackfillOut, dependencies=[Depends(require_reader)])
def backfill_report(
    name: str,
    target: str | None = Query(None, description="Model to migrate to; default: the newest of the lineage."),
    limit: int = Query(20, ge=0, le=10_000, description="How many items to suggest for re-embedding next."),
    registry: Registry = Depends(deps.registry),
    backfill: Backfill = Depends(deps.backfill),
) -> BackfillOut:
    """Items per model version, migration progress, and which items to re-embed next."""
    collection = registry.collection(name)
    model = registry.model_for_collection(collection, target, "target") if target else None
    return BackfillOut(**backfill.report(collection, model, limit))


@router.post("/{name}/retire", response_model=CollectionOut, dependencies=[Depends(require_admin)])
def retire_model(
    name: str, body: RetireRequest, registry: Registry = Depends(deps.registry),
    gallery: Gallery = Depends(deps.gallery),
) -> CollectionOut:
    """Retire a fully migrated model version: no more writes in it, its kept vectors are dropped."""
    collection = registry.collection(name)
    model = registry.model_for_collection(collection, body.model)
    gallery.retire(collection, model)
    return collection_out(collection, registry, gallery)
