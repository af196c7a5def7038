"""/v1/collections: galleries, their items, and queries against them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from index import IndexSpec
from service.api import deps
from service.api.auth import bearer, require_admin, require_reader
from service.api.filter_input import to_filter
from service.api.json_body import JsonBody, json_body
from service.api.openapi import errors
from service.api.schemas import (
    FIELD_PATH_PATTERN,
    BackfillOut,
    CollectionCreate,
    CollectionOut,
    FilterReport,
    Hit,
    IndexOptions,
    ItemOut,
    PartitionOut,
    PartitionReport,
    PayloadIndexOut,
    QueryOut,
    QueryRequest,
    QueryResult,
    RetireRequest,
    ScoreMapOut,
    UpsertOut,
    UpsertRequest,
)
from service.api.vectors import check_matrix, decode_b64, read_matrix, stack_rows
from service.core.catalog import Catalog
from service.core.errors import Invalid, NotFound, TooLarge
from service.core.gallery import Gallery, QueryOutcome, SearchedPartition
from service.settings import Settings
from service.store import CollectionRecord, PayloadIndexRecord

router = APIRouter(prefix="/v1/collections", tags=["collections"])


def collection_out(collection: CollectionRecord, catalog: Catalog, gallery: Gallery) -> CollectionOut:
    counts = catalog.store.item_counts(collection.id)
    states = gallery.partition_states(collection) if gallery.ready.is_set() else {}
    return CollectionOut(
        name=collection.name,
        model=catalog.model_by_id(collection.base_model_id).name,
        index=IndexOptions(**collection.index_spec),
        items=sum(counts.values()),
        items_per_model={catalog.model_by_id(mid).name: n for mid, n in counts.items()},
        kept_per_model={catalog.model_by_id(mid).name: n
                        for mid, n in catalog.store.kept_counts(collection.id).items()},
        payload_indexes=[r.field for r in catalog.store.payload_indexes(collection.id)],
        partitions=[PartitionOut(model=catalog.model_by_id(mid).name, vectors=st.vectors, structure=st.structure,
                                 rebuilding=st.rebuilding) for mid, st in sorted(states.items())],
        created_at=collection.created_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CollectionOut,
             dependencies=[Depends(require_admin)], responses=errors(404, 409))
def create_collection(body: JsonBody(CollectionCreate), catalog: deps.CatalogDep,
                      gallery: deps.GalleryDep) -> CollectionOut:
    spec = IndexSpec.from_dict(body.index.model_dump())
    try:
        gallery.backend.check_spec(spec)
    except ValueError as exc:
        raise Invalid(str(exc), "index.ivf_encoding") from None
    return collection_out(catalog.create_collection(body.name, body.model, spec), catalog, gallery)


@router.get("", response_model=list[CollectionOut], dependencies=[Depends(require_reader)])
def list_collections(catalog: deps.CatalogDep,
                     gallery: deps.GalleryDep) -> list[CollectionOut]:
    return [collection_out(c, catalog, gallery) for c in catalog.collections()]


@router.get("/{name}", response_model=CollectionOut, dependencies=[Depends(require_reader)])
def get_collection(name: str, catalog: deps.CatalogDep,
                   gallery: deps.GalleryDep) -> CollectionOut:
    """The collection, its items per model version and each partition's index state."""
    return collection_out(catalog.collection(name), catalog, gallery)


# ---- items ---------------------------------------------------------------------------------------
@router.post("/{name}/items", response_model=UpsertOut, dependencies=[Depends(require_admin)],
             responses=errors(409, 503))
def upsert_items(
    name: str,
    body: JsonBody(UpsertRequest),
    catalog: deps.CatalogDep,
    gallery: deps.GalleryDep,
    settings: deps.SettingsDep,
    upgrades: deps.UpgradesDep,
) -> UpsertOut:
    collection = catalog.collection(name)
    model = catalog.model_for_collection(collection, body.model)
    if len(body.items) > settings.max_batch_items:
        raise TooLarge(f"has {len(body.items)} items; the limit is {settings.max_batch_items}", "items")
    fields, rows = [], []
    for i, item in enumerate(body.items):
        size = 0 if item.payload is None else len(to_json(item.payload))
        if size > settings.max_payload_bytes:
            raise TooLarge(f"is {size} bytes as JSON; the limit is {settings.max_payload_bytes} (MAX_PAYLOAD_BYTES)",
                           f"items[{i}].payload")
        if item.vector_b64 is not None:
            fields.append(f"items[{i}].vector_b64")
            rows.append(decode_b64(item.vector_b64, fields[-1]))
        else:
            fields.append(f"items[{i}].vector")
            rows.append(np.asarray(item.vector, dtype=np.float32))
    vectors = stack_rows(rows, model.dim, fields, model.metric)
    outcome = gallery.upsert(
        collection, model, [it.id for it in body.items], vectors, [it.payload for it in body.items],
        keep_previous=body.previous_vectors == "keep",
    )
    if outcome.kept:
        upgrades.after_items_written(model.id)  # re-embedded items are training pairs
    return UpsertOut(model=model.name, received=len(body.items), created=outcome.created, updated=outcome.updated,
                     kept=outcome.kept)


@router.get("/{name}/items/{item_id:path}", response_model=ItemOut, dependencies=[Depends(require_reader)],
            responses=errors(503))
def get_item(
    name: str,
    item_id: str,
    catalog: deps.CatalogDep,
    gallery: deps.GalleryDep,
    include_vector: bool = False,
) -> ItemOut:
    item = gallery.get_item(catalog.collection(name), item_id)
    return ItemOut(
        id=item.key,
        model=catalog.model_by_id(item.model_id).name,
        payload=item.payload,
        updated_at=item.updated_at,
        vector=item.vector.tolist() if include_vector else None,
    )


@router.delete("/{name}/items/{item_id:path}", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=[Depends(require_admin)], responses=errors(503))
def delete_item(
    name: str, item_id: str, catalog: deps.CatalogDep, gallery: deps.GalleryDep
) -> Response:
    gallery.delete(catalog.collection(name), item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- queries -------------------------------------------------------------------------------------
_parse_query = json_body(QueryRequest)


def _query_matrix(body: QueryRequest, dim: int, metric: str, max_batch: int) -> np.ndarray:
    """The request's query vector(s) as an (n, dim) float32 matrix, validated."""
    if body.vector is not None:
        if len(body.vector) != dim:
            raise Invalid(f"has dimension {len(body.vector)}, the model expects {dim}", "vector")
        return check_matrix(np.asarray(body.vector, dtype=np.float32)[None, :], dim, "vector", ["vector"], metric)
    if body.vector_b64 is not None:
        matrix = read_matrix(None, body.vector_b64, dim, "vector", "vector_b64", max_batch, metric)
        if len(matrix) != 1:
            raise Invalid(f"holds {len(matrix)} vectors; use vectors_b64 for a batch", "vector_b64")
        return matrix
    return read_matrix(body.vectors, body.vectors_b64, dim, "vectors", "vectors_b64", max_batch, metric)


async def run_query(name: str, request: Request, catalog: Catalog, gallery: Gallery, settings: Settings) -> QueryOut:
    """Parse, plan and run one query request; the gallery decides whether it runs on the event loop."""
    body = await _parse_query(request)
    collection = catalog.collection(name)
    model = catalog.model_for_collection(collection, body.model)
    queries = _query_matrix(body, model.dim, model.metric, settings.max_query_batch)
    where = None if body.filter is None else to_filter(body.filter)
    plan = gallery.plan_query(collection, model, queries, body.k, body.include_payload, where)
    outcome = plan.run() if plan.inline else await run_in_threadpool(plan.run)
    return query_out(body, model.name, outcome, catalog)


@router.post("/{name}/query", response_model=QueryOut, response_model_exclude_none=True,
             dependencies=[Depends(require_reader)], responses=errors(409, 413, 415, 503))
async def query(name: str, request: Request, catalog: deps.CatalogDep, gallery: deps.GalleryDep,
                settings: deps.SettingsDep) -> QueryOut:
    """Search the collection; one vector gives `hits`, a batch gives `results` (one per query)."""
    return await run_query(name, request, catalog, gallery, settings)


async def query_fast(request: Request) -> Response:
    """POST /v1/collections/{name}/query without FastAPI's per-request machinery.

    The documented route above resolves its dependencies and matches its path through FastAPI's
    router on every call (about a sixth of a millisecond: more than an HNSW search). app.py puts
    this plain Starlette route first in the routing table for the same path and method; it runs
    the same checks (the reader key), awaits the same dependency functions and builds the same
    `QueryOut`, serialised as the documented route serialises it (None fields left out); errors go
    through the app's exception handlers exactly as before. `scope["route"]` names the documented
    route so metrics keep one series for queries.
    """
    request.scope["route"] = fast_query_route
    settings = await deps.settings(request)
    await require_reader(request, await bearer(request), settings)
    out = await run_query(request.path_params["name"], request, await deps.catalog(request),
                          await deps.gallery(request), settings)
    return Response(out.model_dump_json(exclude_none=True), media_type="application/json")


fast_query_route = Route(f"{router.prefix}/{{name}}/query", query_fast, methods=["POST"], include_in_schema=False)


def _partition_report(model_name: str, part: SearchedPartition, name_of: Callable[[int], str]) -> PartitionReport:
    if not part.route.edges:
        return PartitionReport(model=model_name, items=part.items)
    return PartitionReport(
        model=model_name,
        items=part.items,
        route=[name_of(part.route.edges[0].src)] + [name_of(e.dst) for e in part.route.edges],
        transformations=[e.transformation_id for e in part.route.edges],
        score_map=ScoreMapOut(a=part.route.score_map.a, b=part.route.score_map.b),
    )


def query_out(body: QueryRequest, model_name: str, outcome: QueryOutcome, catalog: Catalog) -> QueryOut:
    """The response of a query: the one definition both query routes serve."""
    names: dict[int, str] = {}

    def name_of(model_id: int) -> str:
        if model_id not in names:
            names[model_id] = catalog.model_by_id(model_id).name
        return names[model_id]

    results = [[Hit(id=h.key, score=h.score, model=name_of(h.model_id), payload=h.payload) for h in row]
               for row in outcome.hits]
    return QueryOut(
        model=model_name,
        k=body.k,
        hits=None if body.is_batch else results[0],
        results=[QueryResult(hits=row) for row in results] if body.is_batch else None,
        searched=[_partition_report(name_of(m), part, name_of) for m, part in outcome.searched.items()],
        skipped=[PartitionReport(model=name_of(m), items=n, reason=f"no active transformation path from {model_name!r}")
                 for m, n in outcome.skipped.items()],
        filter=None if outcome.filter_plan is None else FilterReport(**outcome.filter_plan),
    )


# ---- payload indexes -----------------------------------------------------------------------------
def _payload_index_out(record: PayloadIndexRecord) -> PayloadIndexOut:
    return PayloadIndexOut(field=record.field, created_at=record.created_at)


@router.get("/{name}/payload-indexes", response_model=list[PayloadIndexOut], dependencies=[Depends(require_reader)])
def list_payload_indexes(name: str, catalog: deps.CatalogDep) -> list[PayloadIndexOut]:
    """Payload fields declared for fast filtering."""
    collection = catalog.collection(name)
    return [_payload_index_out(r) for r in catalog.store.payload_indexes(collection.id)]


@router.put("/{name}/payload-indexes/{field}", response_model=PayloadIndexOut, dependencies=[Depends(require_admin)])
def declare_payload_index(name: str, field: Annotated[str, Path(pattern=FIELD_PATH_PATTERN)],
                          catalog: deps.CatalogDep) -> PayloadIndexOut:
    """Index a payload field (a dotted path) so that selective filters on it are read from an index
    instead of a scan of the collection. Idempotent; writes continue while it builds on PostgreSQL."""
    collection = catalog.collection(name)
    record, _created = catalog.store.create_payload_index(collection.id, field)
    return _payload_index_out(record)


@router.delete("/{name}/payload-indexes/{field}", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=[Depends(require_admin)])
def drop_payload_index(name: str, field: Annotated[str, Path(pattern=FIELD_PATH_PATTERN)],
                       catalog: deps.CatalogDep) -> Response:
    collection = catalog.collection(name)
    if not catalog.store.drop_payload_index(collection.id, field):
        raise NotFound(f"no payload index on {field!r} in collection {collection.name!r}", "field")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- backfill ------------------------------------------------------------------------------------
@router.get("/{name}/backfill", response_model=BackfillOut, dependencies=[Depends(require_reader)])
def backfill_report(
    name: str,
    catalog: deps.CatalogDep,
    backfill: deps.BackfillDep,
    target: Annotated[str | None, Query(description="Model to migrate to; default: the newest of the lineage.")] = None,
    limit: Annotated[int, Query(ge=0, le=10_000, description="How many items to suggest for re-embedding next.")] = 20,
) -> BackfillOut:
    """Items per model version, migration progress, and which items to re-embed next."""
    collection = catalog.collection(name)
    model = catalog.model_for_collection(collection, target, "target") if target else None
    return BackfillOut(**backfill.report(collection, model, limit))


@router.post("/{name}/retire", response_model=CollectionOut, dependencies=[Depends(require_admin)],
             responses=errors(409, 503))
def retire_model(
    name: str, body: JsonBody(RetireRequest), catalog: deps.CatalogDep,
    gallery: deps.GalleryDep,
) -> CollectionOut:
    """Retire a fully migrated model version: no more writes in it, its kept vectors are dropped."""
    collection = catalog.collection(name)
    model = catalog.model_for_collection(collection, body.model)
    gallery.retire(collection, model)
    return collection_out(collection, catalog, gallery)
