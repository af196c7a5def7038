"""The OpenAPI document, made to tell the truth about errors and request bodies.

FastAPI documents only 200 and its own 422 (`HTTPValidationError`, an array under `detail`), while
every failure here is one `ErrorOut` body (service/api/errors.py). This module builds the document
once and, per operation:
- documents the JSON body a `JsonBody` parameter parses (or the route names in `BODY_EXTRA`);
- replaces FastAPI's 422 with `ErrorOut`, and adds the statuses the route's shape implies: 401/403/
  429 behind an API key, 413/415/422 with a JSON body, 404 with a path parameter, 422 with a query
  parameter; the statuses a handler raises itself are declared on its decorator with `errors(...)`.
The fuzz test runs schemathesis' status-code and response-schema checks over every operation, so
a status a route really returns but does not document fails the suite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.utils import get_flat_params
from fastapi.openapi.utils import get_openapi
from fastapi.params import ParamTypes
from fastapi.routing import APIRoute

from service.api.auth import require_admin, require_reader
from service.api.json_body import REF, body_model_of
from service.api.schemas import ErrorOut

_WHY = {
    401: "No valid API key or dashboard session.",
    403: "The key is valid but may not do this (a read key on a write).",
    404: "A resource the path names does not exist.",
    409: "The request conflicts with the current state (named in `detail`).",
    413: "The body, or a part of it, is larger than the limit (named in `detail`).",
    415: "The body is not sent as application/json.",
    422: "The request is invalid; `field` names the first offending field.",
    429: "Too many failed authentications from this client; retry after `Retry-After` seconds.",
    503: "The service cannot answer yet (indexes loading) or its index engine is unreachable; retry.",
}
_SHAPED = {"HTTPValidationError", "ValidationError"}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route decorator: the error statuses its handler raises itself."""
    return {code: _error_response(code) for code in codes}


def _error_response(code: int) -> dict[str, Any]:
    return {"description": _WHY[code],
            "content": {"application/json": {"schema": {"$ref": REF.format(model=ErrorOut.__name__)}}}}


def _implied_errors(route: APIRoute, has_body: bool) -> set[int]:
    codes: set[int] = set()
    where = {getattr(param.field_info, "in_", None) for param in get_flat_params(route.dependant)}
    calls = {dep.call for dep in route.dependant.dependencies}
    if calls & {require_admin, require_reader}:
        codes |= {401, 403, 429}
    if has_body:
        codes |= {413, 415, 422}
    if ParamTypes.path in where:
        codes |= {404}
    if where & {ParamTypes.path, ParamTypes.query}:
        codes |= {422}
    return codes


def install_openapi(app: FastAPI, routers: Sequence[APIRouter], body_extra: dict[str, type] | None = None) -> None:
    """Replace `app.openapi` with the builder described above, for the operations of `routers`.
    `body_extra` maps a route's endpoint name to the model it parses by hand (the query route
    reads its body itself)."""
    body_extra = body_extra or {}

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in _SHAPED:
            components.pop(name, None)

        def add_model(model: type) -> str:
            body = model.model_json_schema(ref_template=REF)
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
            return REF.format(model=model.__name__)

        add_model(ErrorOut)
        for route in (r for router in routers for r in router.routes):
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            model = body_model_of(route.dependant) or body_extra.get(route.name)
            for method in route.methods:
                operation = schema["paths"][route.path_format][method.lower()]
                if model is not None:
                    operation["requestBody"] = {
                        "required": True, "content": {"application/json": {"schema": {"$ref": add_model(model)}}}}
                responses = operation.setdefault("responses", {})
                for code in _implied_errors(route, model is not None):
                    responses[str(code)] = _error_response(code)
                if "422" in responses:  # FastAPI's own, in case a parameter kind above does not imply it
                    responses["422"] = _error_response(422)
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]
