"""Every endpoint as a `Call`: the request to send and how to read its answer, with no I/O.

`Endpoints` is shared by the sync and async clients. Each method builds a `Call` and hands it to
`self._send`, which the sync client runs and returns the result of, and the async client returns as
an awaitable -- so the two clients cannot drift apart on paths, bodies or parsing.

Vectors go out as base64 little-endian float32 (a quarter of the JSON size, exact) and come back
as numpy arrays.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import numpy as np

FLOAT32_LE = np.dtype("<f4")
Metric = Literal["cosine", "ip", "l2"]


def encode_matrix(vectors: np.ndarray | Sequence[Sequence[float]], dim: int | None = None) -> tuple[str, int]:
    """(base64 of the rows as little-endian float32, number of rows); a 1-d array is one row."""
    matrix = np.asarray(vectors, dtype=FLOAT32_LE)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or (dim is not None and matrix.shape[1] != dim):
        raise ValueError(f"expected an (n, {dim or 'dim'}) matrix, got shape {matrix.shape}")
    return base64.b64encode(np.ascontiguousarray(matrix).tobytes()).decode("ascii"), len(matrix)


def encode_vector(vector: np.ndarray | Sequence[float]) -> str:
    row = np.asarray(vector, dtype=FLOAT32_LE)
    if row.ndim != 1:
        raise ValueError(f"expected a 1-d vector, got shape {row.shape}")
    return base64.b64encode(row.tobytes()).decode("ascii")


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    model: str  # the model version of the stored vector that served the hit
    payload: dict[str, Any] | None


@dataclass(frozen=True)
class QueryResult:
    """Hits per query (one list for a single vector), and how each partition was reached."""

    model: str
    k: int
    hits: list[list[Hit]]
    searched: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    filter: dict[str, Any] | None = None  # with a filter: the plan the service took (pre- or post-filter)

    @property
    def ids(self) -> list[list[str]]:
        return [[h.id for h in row] for row in self.hits]

    @property
    def scores(self) -> np.ndarray:
        """(queries, k) float32; NaN where a query had fewer than k hits."""
        out = np.full((len(self.hits), self.k), np.nan, np.float32)
        for i, row in enumerate(self.hits):
            out[i, : len(row)] = [h.score for h in row]
        return out


def _hits(rows: list[dict[str, Any]]) -> list[Hit]:
    return [Hit(h["id"], float(h["score"]), h["model"], h.get("payload")) for h in rows]


def parse_query(body: dict[str, Any]) -> QueryResult:
    rows = [body["hits"]] if "hits" in body else [r["hits"] for r in body["results"]]
    return QueryResult(body["model"], body["k"], [_hits(r) for r in rows], body["searched"], body["skipped"],
                       body.get("filter"))


def parse_item(body: dict[str, Any]) -> dict[str, Any]:
    if body.get("vector") is not None:
        body["vector"] = np.asarray(body["vector"], dtype=np.float32)
    return body


def _json(body: Any) -> Any:
    return body


@dataclass(frozen=True)
class Call:
    """One HTTP request and how to turn its 2xx answer into the method's result.

    `idempotent`: sending it twice has the effect of sending it once, so the client may retry it
    after a connection broke mid-request (upserts by id are; creating a model is not)."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] | None = None
    idempotent: bool = True
    parse: Callable[[Any], Any] = field(default=_json)


def _seg(text: str) -> str:
    """A path segment, percent-encoded (item ids may hold '/', '?', '#', spaces, any Unicode)."""
    return quote(text, safe="")


class Endpoints:
    """The service's operations; subclasses provide `_send(call)`."""

    def _send(self, call: Call) -> Any:  # pragma: no cover - provided by the clients
        raise NotImplementedError

    # ---- health ---------------------------------------------------------------------------------
    def ready(self) -> Any:
        """GET /readyz: {"ready": bool, ...} (503 becomes UnavailableError after retries)."""
        return self._send(Call("GET", "/readyz"))

    # ---- models ---------------------------------------------------------------------------------
    def create_model(self, name: str, dim: int, metric: Metric = "cosine", successor_of: str | None = None,
                     description: str | None = None, training: Mapping[str, Any] | None = None) -> Any:
        body: dict[str, Any] = {"name": name, "dim": dim, "metric": metric}
        for key, value in (("successor_of", successor_of), ("description", description), ("training", training)):
            if value is not None:
                body[key] = dict(value) if isinstance(value, Mapping) else value
        return self._send(Call("POST", "/v1/models", body, idempotent=False))

    def models(self) -> Any:
        return self._send(Call("GET", "/v1/models"))

    def model(self, name: str) -> Any:
        return self._send(Call("GET", f"/v1/models/{_seg(name)}"))

    def compatibility(self, name: str) -> Any:
        return self._send(Call("GET", f"/v1/models/{_seg(name)}/compatibility"))

    # ---- collections ----------------------------------------------------------------------------
    def create_collection(self, name: str, model: str, index: Mapping[str, Any] | None = None) -> Any:
        body: dict[str, Any] = {"name": name, "model": model}
        if index is not None:
            body["index"] = dict(index)
        return self._send(Call("POST", "/v1/collections", body, idempotent=False))

    def collections(self) -> Any:
        return self._send(Call("GET", "/v1/collections"))

    def collection(self, name: str) -> Any:
        return self._send(Call("GET", f"/v1/collections/{_seg(name)}"))

    def upsert_call(self, collection: str, model: str, ids: Sequence[str], vectors: np.ndarray,
                    payloads: Sequence[Mapping[str, Any] | None] | None = None,
                    previous_vectors: Literal["keep", "drop"] = "keep") -> Call:
        matrix = np.asarray(vectors, dtype=FLOAT32_LE)
        if matrix.ndim != 2 or len(matrix) != len(ids):
            raise ValueError(f"{len(ids)} ids need an ({len(ids)}, dim) matrix, got shape {matrix.shape}")
        if payloads is not None and len(payloads) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(payloads)} payloads")
        items = []
        for i, item_id in enumerate(ids):
            item: dict[str, Any] = {"id": item_id, "vector_b64": encode_vector(matrix[i])}
            if payloads is not None and payloads[i] is not None:
                item["payload"] = dict(payloads[i])
            items.append(item)
        body = {"model": model, "items": items, "previous_vectors": previous_vectors}
        return Call("POST", f"/v1/collections/{_seg(collection)}/items", body)

    def upsert(self, collection: str, model: str, ids: Sequence[str], vectors: np.ndarray,
               payloads: Sequence[Mapping[str, Any] | None] | None = None,
               previous_vectors: Literal["keep", "drop"] = "keep") -> Any:
        """One batch (at most the service's MAX_BATCH_ITEMS); see `upsert_many` for any size."""
        return self._send(self.upsert_call(collection, model, ids, vectors, payloads, previous_vectors))

    def item(self, collection: str, item_id: str, include_vector: bool = False) -> Any:
        """The item's payload and model; with `include_vector`, its vector as a float32 array."""
        return self._send(Call("GET", f"/v1/collections/{_seg(collection)}/items/{_seg(item_id)}",
                               params={"include_vector": "true" if include_vector else "false"}, parse=parse_item))

    def delete(self, collection: str, item_id: str) -> Any:
        return self._send(Call("DELETE", f"/v1/collections/{_seg(collection)}/items/{_seg(item_id)}",
                               parse=lambda _body: None))

    def query(self, collection: str, model: str, vectors: np.ndarray | Sequence[float], k: int = 10,
              include_payload: bool = True, filter: Mapping[str, Any] | None = None) -> Any:  # noqa: A002
        """Search with one vector (1-d) or a batch ((n, dim)): a `QueryResult` with one hit list per
        query. `filter` restricts hits by payload (see the query route's documentation)."""
        matrix = np.asarray(vectors, dtype=FLOAT32_LE)
        body: dict[str, Any] = {"model": model, "k": k, "include_payload": include_payload}
        if matrix.ndim == 1:
            body["vector_b64"] = encode_vector(matrix)
        else:
            body["vectors_b64"] = encode_matrix(matrix)[0]
        if filter is not None:
            body["filter"] = dict(filter)
        return self._send(Call("POST", f"/v1/collections/{_seg(collection)}/query", body, parse=parse_query))

    def payload_indexes(self, collection: str) -> Any:
        return self._send(Call("GET", f"/v1/collections/{_seg(collection)}/payload-indexes"))

    def declare_payload_index(self, collection: str, field: str) -> Any:
        """Index a payload field (dotted path) for filters; idempotent."""
        return self._send(Call("PUT", f"/v1/collections/{_seg(collection)}/payload-indexes/{_seg(field)}"))

    def drop_payload_index(self, collection: str, field: str) -> Any:
        return self._send(Call("DELETE", f"/v1/collections/{_seg(collection)}/payload-indexes/{_seg(field)}",
                               parse=lambda _body: None))

    def backfill(self, collection: str, target: str | None = None, limit: int = 20) -> Any:
        params: dict[str, Any] = {"limit": limit}
        if target is not None:
            params["target"] = target
        return self._send(Call("GET", f"/v1/collections/{_seg(collection)}/backfill", params=params))

    def retire(self, collection: str, model: str) -> Any:
        return self._send(Call("POST", f"/v1/collections/{_seg(collection)}/retire", {"model": model}))

    # ---- upgrades -------------------------------------------------------------------------------
    def upgrades(self) -> Any:
        return self._send(Call("GET", "/v1/upgrades"))

    def upgrade(self, upgrade_id: int) -> Any:
        return self._send(Call("GET", f"/v1/upgrades/{int(upgrade_id)}"))

    def upgrade_for(self, old_model: str, new_model: str) -> Any:
        """The upgrade old_model -> new_model (registering a successor creates it)."""
        return self._send(Call("GET", "/v1/upgrades", parse=lambda rows: _one_upgrade(rows, old_model, new_model)))

    def create_upgrade(self, old_model: str, new_model: str) -> Any:
        return self._send(Call("POST", "/v1/upgrades", {"old_model": old_model, "new_model": new_model},
                               idempotent=False))

    def pairs_call(self, upgrade_id: int, old: np.ndarray, new: np.ndarray, ids: Sequence[str] | None = None,
                   labels: Sequence[str | int] | None = None) -> Call:
        old_b64, n_old = encode_matrix(old)
        new_b64, n_new = encode_matrix(new)
        if n_old != n_new:
            raise ValueError(f"{n_old} old rows but {n_new} new rows; rows must be paired")
        body: dict[str, Any] = {"old_vectors_b64": old_b64, "new_vectors_b64": new_b64}
        if ids is not None:
            body["ids"] = list(ids)
        if labels is not None:
            body["labels"] = list(labels)
        # Without ids a repeated upload adds the pairs twice: only keyed uploads are retried blindly.
        return Call("POST", f"/v1/upgrades/{int(upgrade_id)}/pairs", body, idempotent=ids is not None)

    def add_pairs(self, upgrade_id: int, old: np.ndarray, new: np.ndarray, ids: Sequence[str] | None = None,
                  labels: Sequence[str | int] | None = None) -> Any:
        return self._send(self.pairs_call(upgrade_id, old, new, ids, labels))

    def train(self, upgrade_id: int, method: str = "auto", params: Mapping[str, Any] | None = None,
              label_field: str | None = None, seed: int | None = None, fit_near_gallery: int | None = None) -> Any:
        """Queue a training job (202); the job's JSON. Follow it with `wait_for_job`. `fit_near_gallery`:
        fit on the pairs nearest the items still in the old version (docs/adapters.md)."""
        body: dict[str, Any] = {"method": method}
        for key, value in (("params", params), ("label_field", label_field), ("seed", seed),
                           ("fit_near_gallery", fit_near_gallery)):
            if value is not None:
                body[key] = dict(value) if isinstance(value, Mapping) else value
        return self._send(Call("POST", f"/v1/upgrades/{int(upgrade_id)}/train", body, idempotent=False))

    def set_training_policy(self, upgrade_id: int, min_pairs: int, method: str = "auto",
                            fit_near_gallery: int | None = None) -> Any:
        body: dict[str, Any] = {"min_pairs": min_pairs, "method": method}
        if fit_near_gallery is not None:
            body["fit_near_gallery"] = fit_near_gallery
        return self._send(Call("PUT", f"/v1/upgrades/{int(upgrade_id)}/training", body))

    def clear_training_policy(self, upgrade_id: int) -> Any:
        return self._send(Call("DELETE", f"/v1/upgrades/{int(upgrade_id)}/training"))

    def activate(self, upgrade_id: int, transformation: int | None = None, force: bool = False) -> Any:
        body: dict[str, Any] = {"force": force}
        if transformation is not None:
            body["transformation"] = transformation
        return self._send(Call("POST", f"/v1/upgrades/{int(upgrade_id)}/activate", body))

    def deactivate(self, upgrade_id: int) -> Any:
        return self._send(Call("POST", f"/v1/upgrades/{int(upgrade_id)}/deactivate"))

    # ---- jobs and sessions ----------------------------------------------------------------------
    def jobs(self, state: str | None = None, limit: int | None = None) -> Any:
        params = {k: v for k, v in (("state", state), ("limit", limit)) if v is not None}
        return self._send(Call("GET", "/v1/jobs", params=params))

    def job(self, job_id: int) -> Any:
        return self._send(Call("GET", f"/v1/jobs/{int(job_id)}"))

    def cancel_job(self, job_id: int) -> Any:
        return self._send(Call("POST", f"/v1/jobs/{int(job_id)}/cancel"))

    def sessions(self, include_ended: bool = False) -> Any:
        return self._send(Call("GET", "/v1/sessions", params={"include_ended": "true" if include_ended else "false"}))

    def revoke_session(self, session_id: int) -> Any:
        return self._send(Call("DELETE", f"/v1/sessions/{int(session_id)}", parse=lambda _body: None))

    def revoke_all_sessions(self) -> Any:
        return self._send(Call("DELETE", "/v1/sessions"))


def _one_upgrade(rows: list[dict[str, Any]], old_model: str, new_model: str) -> dict[str, Any]:
    for row in rows:
        if row["old_model"] == old_model and row["new_model"] == new_model:
            return row
    from nobackfill.client.errors import NotFoundError

    raise NotFoundError(404, "not_found", f"no upgrade {old_model!r} -> {new_model!r}", "new_model")


TERMINAL_JOB_STATES = frozenset({"succeeded", "failed", "cancelled"})
