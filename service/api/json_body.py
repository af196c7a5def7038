"""Every JSON request body, parsed by pydantic-core's JSON parser straight from the raw bytes.

One parser for every route, so every body is held to the same rules:
- the Content-Type must be `application/json` (or `application/<x>+json`): anything else is a 415,
  never a form or text body read as JSON by accident;
- strict types (the request models are strict): a number is a JSON number, never the string "1";
- a lone UTF-16 surrogate escape (`\ud800`) is refused with a message that says so.
FastAPI's default path (`json.loads`, then validation) also costs several times the search itself
for bodies of thousands of floats; `model_validate_json` parses and validates in one pass in Rust.
Errors keep the shape of FastAPI's validation errors; `install_openapi` documents each route's body
from the model its `JsonBody` names, so the OpenAPI still shows every request schema.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from service.core.errors import UnsupportedMediaType

T = TypeVar("T", bound=BaseModel)
REF = "#/components/schemas/{model}"
_JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json\s*(?:;.*)?$", re.IGNORECASE)
_SURROGATE_ERROR = "hex escape"


def check_json_content_type(request: Request) -> None:
    """415 unless the request says its body is JSON."""
    content_type = request.headers.get("content-type")
    if content_type is None or not _JSON_TYPE.match(content_type):
        got = "no Content-Type" if content_type is None else f"Content-Type {content_type!r}"
        raise UnsupportedMediaType(f"the body must be JSON sent as Content-Type application/json; got {got}",
                                   "Content-Type")


def _message(error: dict) -> str:
    if error["type"] == "json_invalid" and _SURROGATE_ERROR in error["msg"]:
        where = error["msg"].rsplit(" at ", 1)[-1]
        return (f"Invalid JSON: a \\u escape of a lone UTF-16 surrogate (\\ud800-\\udfff must come in pairs) "
                f"at {where}")
    return error["msg"]


def json_body(model: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A dependency returning the request body validated as `model`."""

    async def parse(request: Request) -> T:
        check_json_content_type(request)
        raw = await request.body()
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"]), "msg": _message(e)}
                      for e in exc.errors(include_url=False, include_input=False)]
            raise RequestValidationError(errors) from None

    parse.body_model = model  # type: ignore[attr-defined]  # read by body_model_of for the OpenAPI
    return parse


def JsonBody(model: type[T]) -> Any:  # noqa: N802 -- used as a type: `body: JsonBody(ModelCreate)`
    """The annotation of a route parameter that receives the JSON body parsed as `model`."""
    return Annotated[model, Depends(json_body(model))]


def body_model_of(dependant: Dependant) -> type[BaseModel] | None:
    """The model a route's `JsonBody` parameter parses, if it has one."""
    for dep in dependant.dependencies:
        found = getattr(dep.call, "body_model", None) or body_model_of(dep)
        if found is not None:
            return found
    return None
