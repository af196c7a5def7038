"""A query's `filter` (the request models in schemas.py) turned into the filter tree the
application layer evaluates (service/store/filters.py), within bounds."""

from __future__ import annotations

from service.api.schemas import (
    AndFilter,
    EqFilter,
    ExistsFilter,
    InFilter,
    NotFilter,
    OrFilter,
    RangeFilter,
)
from service.core.errors import Invalid
from service.store import filters

MAX_DEPTH = 8
MAX_CONDITIONS = 64


def to_filter(spec: object, field: str = "filter") -> filters.Node:
    count = 0

    def walk(node: object, depth: int, where: str) -> filters.Node:
        nonlocal count
        if depth > MAX_DEPTH:
            raise Invalid(f"nests deeper than {MAX_DEPTH} levels", where)
        if isinstance(node, AndFilter | OrFilter):
            parts = node.and_ if isinstance(node, AndFilter) else node.or_
            name = "and" if isinstance(node, AndFilter) else "or"
            children = tuple(walk(child, depth + 1, f"{where}.{name}[{i}]") for i, child in enumerate(parts))
            return filters.All(children) if isinstance(node, AndFilter) else filters.AnyOf(children)
        if isinstance(node, NotFilter):
            return filters.Not(walk(node.not_, depth + 1, f"{where}.not"))
        count += 1
        if count > MAX_CONDITIONS:
            raise Invalid(f"has more than {MAX_CONDITIONS} conditions", field)
        path = tuple(node.field.split("."))  # type: ignore[attr-defined]
        if isinstance(node, EqFilter):
            return filters.Condition(path, "eq", node.eq)
        if isinstance(node, InFilter):
            return filters.Condition(path, "in", tuple(node.in_))
        if isinstance(node, RangeFilter):
            b = node.range
            return filters.Condition(path, "range", filters.Range(b.gt, b.gte, b.lt, b.lte))
        if isinstance(node, ExistsFilter):
            return filters.Condition(path, "exists", node.exists)
        raise TypeError(f"not a filter model: {type(node).__name__}")  # pragma: no cover

    return walk(spec, 1, field)
