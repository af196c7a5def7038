"""Request and response bodies of the HTTP API (pydantic), with their limits."""

from __future__ import annotations

import math
import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from adapters import servable
from service.api.ids import RowIdField

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
Name = Field(pattern=NAME_PATTERN, description="Letters, digits and _ . : @ -, up to 128 characters.")


class _Strict(BaseModel):
    """A request body: unknown fields refused, and no coercion (a number is a JSON number, a flag is
    true or false, never "1" or "yes")."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _check_id(value: str) -> str:
    """Item and pair ids are taken exactly as sent -- no trimming, no Unicode normalisation (NFC and
    NFD spellings are two ids) -- so what a client stores is what it gets back; ids that cannot be
    told apart on a screen or in a log are refused: whitespace only, or holding a control character."""
    if not value.strip():
        raise ValueError("must not be empty or whitespace only")
    for position, char in enumerate(value):
        if unicodedata.category(char) == "Cc":
            raise ValueError(f"must not contain control characters (U+{ord(char):04X} at position {position})")
    return value


ItemId = Annotated[str, Field(min_length=1, max_length=512), AfterValidator(_check_id)]

_PAYLOAD_DEPTH = 32


def _check_payload(value: dict[str, Any]) -> dict[str, Any]:
    """What every store can hold and give back unchanged: no NaN or infinity (not JSON), no NUL
    character in a key or string (PostgreSQL's jsonb refuses it), nesting up to 32 levels."""
    stack: list[tuple[Any, str, int]] = [(value, "payload", 0)]
    while stack:
        node, where, depth = stack.pop()
        if depth > _PAYLOAD_DEPTH:
            raise ValueError(f"nests deeper than {_PAYLOAD_DEPTH} levels at {where}")
        if isinstance(node, dict):
            for key, child in node.items():
                if "\x00" in key:
                    raise ValueError(f"has a key with a NUL character at {where}")
                stack.append((child, f"{where}.{key}", depth + 1))
        elif isinstance(node, list):
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(node))
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError(f"holds a non-finite number at {where}")
        elif isinstance(node, str) and "\x00" in node:
            raise ValueError(f"holds a string with a NUL character at {where}")
    return value


Payload = Annotated[dict[str, Any], AfterValidator(_check_payload)]


class FieldError(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    """Every 4xx/5xx body."""

    error: str = Field(description="A stable code: invalid, not_found, conflict, unauthorized, forbidden, "
                                   "too_large, unsupported_media_type, too_many_requests, unavailable, ...")
    detail: str = Field(description="What is wrong, in words.")
    field: str | None = Field(None, description="The offending field: a dotted path into the body (items[3].vector), "
                                                "a parameter or header name.")
    errors: list[FieldError] | None = Field(None, description="Validation errors: every offending field (up to 20).")


# ---- models ------------------------------------------------------------------------------------
class TrainingPolicy(_Strict):
    min_pairs: int = Field(ge=1, le=2**31 - 1, description="Train by itself once the upgrade has this many pairs "
                           "(uploads and re-embedded items); retrain each time the count doubles. At least "
                           "MIN_TRAINING_PAIRS.")
    method: str = Field("auto", description=f"One of the servable methods: {', '.join(servable())}.")
    fit_near_gallery: int | None = Field(
        None, ge=1, le=100, description="Its trainings fit on the pairs nearest the gallery, as a train request's "
        "fit_near_gallery. Default: every pair.",
    )


class TrainingPolicyOut(TrainingPolicy):
    trained_at_pairs: int = Field(description="Pair count at the last training the policy started (0: none yet).")


class ModelCreate(_Strict):
    name: str = Name
    dim: int = Field(ge=1, description="Embedding dimension.")
    metric: Literal["cosine", "ip", "l2"] = "cosine"
    successor_of: str | None = Field(None, description="Name of the model version this one upgrades.")
    description: str | None = Field(None, max_length=4_000)
    training: TrainingPolicy | None = Field(
        None, description="With successor_of: the upgrade trains by itself (see TrainingPolicy); a "
                          "policy-trained transformation is activated only when it passes the ECC and beats the "
                          "active one on held-out pairs.")


class ModelOut(BaseModel):
    name: str
    dim: int
    metric: str
    successor_of: str | None
    description: str | None
    created_at: datetime
    lineage: list[str] = Field(description="Every model of this model's lineage, oldest first.")


# ---- collections -------------------------------------------------------------------------------
class IndexOptions(_Strict):
    kind: Literal["flat", "hnsw", "ivf"] = "flat"
    hnsw_m: int = Field(32, ge=4, le=128)
    hnsw_ef_construction: int = Field(80, ge=8, le=2_000)
    hnsw_ef_search: int = Field(64, ge=1, le=4_096)
    ivf_nlist: int = Field(0, ge=0, le=1_000_000, description="0 = about 4·sqrt(n) at training time.")
    ivf_nprobe: int = Field(16, ge=1, le=65_536)
    ivf_train_min: int = Field(10_000, ge=100, le=100_000_000, description="Exact search until this many vectors.")
    ivf_encoding: Literal["flat", "sq8", "pq"] = Field(
        "flat", description="What an IVF's lists store: float32 vectors (flat), one byte per dimension (sq8, 4x "
                            "less memory) or product-quantisation codes (pq, one byte per ivf_pq_sub_dim dimensions; "
                            "exact search until 9,984 vectors). Only with kind ivf; pq only on the FAISS backend.")
    ivf_pq_sub_dim: int = Field(4, ge=1, le=64,
                                description="Dimensions per PQ byte code (memory 1/(4·this) of float32).")
    ivf_rerank: int = Field(0, ge=0, le=64, description=(
        "With sq8 or pq: fetch this many times k candidates from the index and re-score them exactly on the "
        "full vectors the database stores, so scores are exact and recall rises (0 = off)."))

    @field_validator("ivf_encoding")
    @classmethod
    def _encoding_needs_ivf(cls, encoding: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind", "flat")
        if encoding != "flat" and kind != "ivf":
            raise ValueError(f"{encoding!r} needs kind 'ivf', not {kind!r}")
        return encoding

    @field_validator("ivf_rerank")
    @classmethod
    def _rerank_needs_codes(cls, rerank: int, info: ValidationInfo) -> int:
        if rerank and info.data.get("ivf_encoding", "flat") == "flat":
            raise ValueError("re-ranking needs a quantised ivf_encoding ('sq8' or 'pq'); float lists are exact already")
        return rerank


class CollectionCreate(_Strict):
    name: str = Name
    model: str = Field(description="The model version the collection's vectors start in.")
    index: IndexOptions = Field(default_factory=IndexOptions)


class PartitionOut(BaseModel):
    """One model version's vectors in a collection, as its index holds them now."""

    model: str
    vectors: int
    structure: str = Field(description="flat | hnsw | ivf, or exact while an IVF partition is below ivf_train_min.")
    rebuilding: bool = Field(description="A new index (IVF training, HNSW compaction) is being built beside the "
                                         "live one; queries and writes continue meanwhile.")


class CollectionOut(BaseModel):
    name: str
    model: str
    index: IndexOptions
    items: int
    items_per_model: dict[str, int] = Field(description="Items per model version of their current vector.")
    kept_per_model: dict[str, int] = Field(
        default_factory=dict,
        description="Re-embedded items whose vector in an older version is kept (and searched) until that "
                    "version is retired: one extra vector each.")
    partitions: list[PartitionOut] = Field(default_factory=list)
    payload_indexes: list[str] = Field(default_factory=list, description="Payload fields indexed for filters.")
    created_at: datetime


# ---- items -------------------------------------------------------------------------------------
class ItemIn(_Strict):
    id: ItemId
    vector: list[float] | None = None
    vector_b64: str | None = Field(None, description="Base64 of little-endian float32 values.")
    payload: Payload | None = Field(None, description="Any JSON object (at most MAX_PAYLOAD_BYTES as compact JSON); "
                                                      "returned with hits and usable in query filters.")

    @model_validator(mode="after")
    def _one_vector(self) -> ItemIn:
        if (self.vector is None) == (self.vector_b64 is None):
            raise ValueError("give exactly one of vector or vector_b64")
        return self


class UpsertRequest(_Strict):
    model: str
    items: list[ItemIn]
    previous_vectors: Literal["keep", "drop"] = Field(
        "keep",
        description="For items that already exist: `keep` (a re-embedding of the same content) leaves "
                    "their vectors in older model versions searchable, so clients of those versions keep "
                    "their own-model quality until the version is retired; `drop` (the content changed) "
                    "removes every other version's vector. Vectors in versions newer than `model` are "
                    "always dropped: an older version cannot vouch for them.")


class UpsertOut(BaseModel):
    model: str
    received: int
    created: int
    updated: int
    kept: int = Field(0, description="Existing items whose previous version's vector stays searchable.")


class ItemOut(BaseModel):
    id: str
    model: str
    payload: dict[str, Any] | None
    updated_at: datetime
    vector: list[float] | None = None


# ---- payload filters (semantics: service/store/filters.py) ---------------------------------------
FIELD_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}(\.[A-Za-z_][A-Za-z0-9_-]{0,63}){0,7}$"
FieldPath = Annotated[str, Field(pattern=FIELD_PATH_PATTERN, description="A payload key, or a dotted path into "
                                 "nested objects; each key starts with a letter or _, then letters, digits, _ "
                                 "or -; up to 8 levels.")]
FilterScalar = str | int | float | bool


class EqFilter(_Strict):
    field: FieldPath
    eq: FilterScalar = Field(description="Type-exact: \"1\" is not 1, true is not 1; 1 equals 1.0.")


class InFilter(_Strict):
    field: FieldPath
    in_: list[FilterScalar] = Field(alias="in", min_length=1, max_length=1_024)


class RangeBounds(_Strict):
    gt: int | float | None = None
    gte: int | float | None = None
    lt: int | float | None = None
    lte: int | float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> RangeBounds:
        bounds = [b for b in (self.gt, self.gte, self.lt, self.lte) if b is not None]
        if not bounds:
            raise ValueError("give at least one of gt, gte, lt, lte")
        if not all(math.isfinite(b) for b in bounds):
            raise ValueError("bounds must be finite numbers")
        return self


class RangeFilter(_Strict):
    field: FieldPath
    range: RangeBounds = Field(description="Numbers only: a payload value that is not a number never matches.")


class ExistsFilter(_Strict):
    field: FieldPath
    exists: bool = Field(description="true: present and not null; false: missing or null.")


class AndFilter(_Strict):
    and_: list[PayloadFilter] = Field(alias="and", min_length=1, max_length=32)


class OrFilter(_Strict):
    or_: list[PayloadFilter] = Field(alias="or", min_length=1, max_length=32)


class NotFilter(_Strict):
    not_: PayloadFilter = Field(alias="not")


_FILTER_KEYS = ("and", "or", "not", "eq", "in", "range", "exists")


def _filter_kind(value: Any) -> str | None:
    """Which filter a JSON object is, by the key it carries (a clear error when it has none)."""
    if isinstance(value, dict):
        return next((key for key in _FILTER_KEYS if key in value), None)
    for key, attr in (("and", "and_"), ("or", "or_"), ("not", "not_"), ("in", "in_")):
        if hasattr(value, attr):
            return key
    return next((key for key in ("eq", "range", "exists") if hasattr(value, key)), None)


PayloadFilter = Annotated[
    Annotated[AndFilter, Tag("and")] | Annotated[OrFilter, Tag("or")] | Annotated[NotFilter, Tag("not")]
    | Annotated[EqFilter, Tag("eq")] | Annotated[InFilter, Tag("in")] | Annotated[RangeFilter, Tag("range")]
    | Annotated[ExistsFilter, Tag("exists")],
    Discriminator(_filter_kind, custom_error_type="filter_kind",
                  custom_error_message="a filter needs one of the keys and, or, not, eq, in, range, exists"),
]
for _model in (AndFilter, OrFilter, NotFilter):
    _model.model_rebuild()


class PayloadIndexOut(BaseModel):
    field: str
    created_at: datetime


# ---- queries -----------------------------------------------------------------------------------
class QueryRequest(_Strict):
    model: str = Field(description="The model version that embedded the query.")
    vector: list[float] | None = None
    vector_b64: str | None = None
    vectors: list[list[float]] | None = Field(None, description="A batch of queries.")
    vectors_b64: str | None = Field(None, description="A batch: base64 of n·dim little-endian float32.")
    k: int = Field(10, ge=1, le=1_000)
    include_payload: bool = True
    filter: PayloadFilter | None = Field(
        None, description="Only items whose payload matches (docs/filters.md): conditions eq, in, range, exists "
                          "on a field, combined with and / or / not; type-exact.")

    @model_validator(mode="after")
    def _one_input(self) -> QueryRequest:
        given = [f for f in ("vector", "vector_b64", "vectors", "vectors_b64") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of vector, vector_b64, vectors, vectors_b64")
        return self

    @property
    def is_batch(self) -> bool:
        return self.vectors is not None or self.vectors_b64 is not None


class Hit(BaseModel):
    id: str
    score: float = Field(description="Higher is better: cosine, inner product, or -squared L2, on the query "
                                     "model's scale (routed scores calibrated). In a partly re-embedded gallery "
                                     "the hit order is the merge's (docs/upgrades.md), so scores of hits served "
                                     "by different versions need not be sorted.")
    model: str = Field(description="Model version of the stored representation that served the hit: the "
                                   "query's own when the item has a vector in it, else the best-measured route.")
    payload: dict[str, Any] | None = None


class ScoreMapOut(BaseModel):
    a: float
    b: float


class PartitionReport(BaseModel):
    model: str
    items: int
    reason: str | None = None
    route: list[str] | None = Field(
        None, description="Models the query passed through to reach this partition (absent: searched natively)."
    )
    transformations: list[int] | None = Field(None, description="Transformation ids along the route.")
    score_map: ScoreMapOut | None = Field(
        None, description="Calibration applied to this partition's scores: a*s + b (query model's scale)."
    )


class QueryResult(BaseModel):
    hits: list[Hit]


class FilterReport(BaseModel):
    plan: Literal["pre-filter", "post-filter"] = Field(
        description="post-filter: the filter was applied to the hits of a (wider) search; pre-filter: a selective "
                    "filter's matching items were read from the database and only they were searched.")
    matching: int | None = Field(None, description="pre-filter: how many items match.")
    fetched: int | None = Field(None, description="post-filter: hits asked of each partition in the last search.")
    searches: int = Field(description="Index searches the query took (1 when the first one found k matches).")


class QueryOut(BaseModel):
    model: str
    k: int
    hits: list[Hit] | None = None
    results: list[QueryResult] | None = None
    searched: list[PartitionReport]
    skipped: list[PartitionReport] = Field(
        description="Partitions with items this query could not be compared with (no path yet)."
    )
    filter: FilterReport | None = Field(None, description="With a filter: how it was applied.")


# ---- upgrades ----------------------------------------------------------------------------------
class PairsUpload(_Strict):
    """Training pairs: row i of old and new embeds the same item. Give each side as JSON rows or base64."""

    ids: list[ItemId] | None = Field(None, description="Optional pair ids; re-sending an id replaces that pair.")
    old_vectors: list[list[float]] | None = None
    old_vectors_b64: str | None = Field(None, description="Base64 of n·d_old little-endian float32.")
    new_vectors: list[list[float]] | None = None
    new_vectors_b64: str | None = Field(None, description="Base64 of n·d_new little-endian float32.")
    labels: list[str | int] | None = Field(None, description="Optional class labels (enable label-aware losses).")

    @model_validator(mode="after")
    def _one_of_each(self) -> PairsUpload:
        for side in ("old", "new"):
            given = [getattr(self, f"{side}_vectors") is not None, getattr(self, f"{side}_vectors_b64") is not None]
            if sum(given) != 1:
                raise ValueError(f"give exactly one of {side}_vectors, {side}_vectors_b64")
        if self.labels is not None and any(len(str(v)) > 256 for v in self.labels):
            raise ValueError("labels must be at most 256 characters")
        return self


class PairsOut(BaseModel):
    upgrade_id: int
    received: int
    created: int
    replaced: int
    pairs: dict[str, int]


class UpgradeCreate(_Strict):
    old_model: str
    new_model: str = Field(description="A later version of old_model's lineage (e.g. v3 for v1).")


class TrainRequest(_Strict):
    method: str = Field("auto", description=f"One of the servable methods: {', '.join(servable())}.")
    params: dict[str, Any] = Field(default_factory=dict, description="Method parameters (see docs/adapters.md).")
    label_field: str | None = Field(
        None, max_length=128, description="Payload field holding the class label of re-embedded gallery items."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    fit_near_gallery: int | None = Field(
        None, ge=1, le=100, description="Fit only on the pairs among the N nearest (by the old model) of a sampled "
        "gallery item still in the old version -- where the map's queries are answered. For pairs not drawn like "
        "the gallery (another catalogue, a query log); 3 measured best (docs/adapters.md). Default: every pair.",
    )


class ActivateRequest(_Strict):
    transformation: RowIdField | None = Field(None, description="Transformation id (1..2³¹−1); default: the newest.")
    force: bool = Field(False, description="Activate even though it does not pass the compatibility criterion.")


class TransformationOut(BaseModel):
    id: int
    method: str
    job_id: int | None
    passes_ecc: bool
    active: bool
    created_at: datetime
    activated_at: datetime | None
    evaluation: dict[str, Any]


class UpgradeOut(BaseModel):
    id: int
    old_model: str
    new_model: str
    active_transformation: int | None
    pairs: dict[str, int]
    transformations: list[TransformationOut]
    jobs: list[int] = Field(description="Training jobs of this upgrade, newest first.")
    training: TrainingPolicyOut | None = Field(None, description="The training policy (None: trains on request).")
    created_at: datetime
    updated_at: datetime


# ---- jobs --------------------------------------------------------------------------------------
class JobOut(BaseModel):
    id: int
    kind: str
    subject: str | None
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: float
    message: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    log_tail: str
    attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


# ---- backfill ----------------------------------------------------------------------------------
class BackfillModel(BaseModel):
    model: str
    items: int
    retired: bool


class BackfillSuggestion(BaseModel):
    id: str
    model: str
    routed_hits: int | None = Field(
        description="How many sampled target-model proxy queries, routed into this item's model, hold it in their "
                    "top 10 (the order's key); null where the item's model has no route both ways.")
    predicted_error: float | None = Field(
        description="The upgrade's predicted transformation error for this item (1 - cosine between its mapped old "
                    "vector and where the new model would put it); null without an active upgrade from its model.")


class BackfillOut(BaseModel):
    collection: str
    target: str
    items: int
    migrated: int
    progress: float = Field(description="Share of the items whose vector is in the target model.")
    models: list[BackfillModel]
    order: str = Field(description="How `suggested` is ordered.")
    suggested: list[BackfillSuggestion]


class RetireRequest(_Strict):
    model: str


# ---- dashboard sessions ------------------------------------------------------------------------
class SessionOut(BaseModel):
    id: int
    role: str = Field(description="admin | reader")
    client: str = Field(description="The client address that logged in.")
    user_agent: str
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime = Field(description="Last use, to the minute.")
    revoked_at: datetime | None


class SessionsRevoked(BaseModel):
    revoked: int
