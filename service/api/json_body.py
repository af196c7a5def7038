"""Request bodies parsed by pydantic-core's JSON parser straight from the raw bytes.

FastAPI's default path runs `json.loads` into Python objects and then validates them; for bodies
made of thousands of floats (query batches, ingest batches) that costs several times the search
itself. `model_validate_json` parses and validates in one pass in Rust. Errors keep the same shape
as FastAPI's own validation errors, and the models still appear in the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)
_REF = "#/components/schemas/{model}"


def json_body(model: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A dependency returning the request body validated as `model`."""

    async def parse(request: Request) -> T:
        raw = await request.body()
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_input=False)]
            raise RequestValidationError(errors) from None

    return parse


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose body is parsed by `json_body(model)`."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}},
        }
    }


def install_openapi(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add the schemas of raw-parsed bodies to the app's OpenAPI components."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                body = model.model_json_schema(ref_template=_REF)
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
