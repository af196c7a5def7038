"""Payload filters: what `filter` in a query means, evaluated in Python.

A filter is a tree of conditions on an item's payload:

    {"and": [f, ...]} | {"or": [f, ...]} | {"not": f}
    {"field": "color", "eq": "red"}              # str, number or bool
    {"field": "color", "in": ["red", "blue"]}     # any of them
    {"field": "price", "range": {"gte": 10, "lt": 20}}   # numbers only
    {"field": "color", "exists": true}            # present and not null

`field` is a dotted path into nested objects (`specs.size`). Matching is **type-exact**: a
string never equals a number ("1" is not 1), a boolean is not a number (true is not 1), numbers
compare by value (1 equals 1.0), and a list or object never matches `eq`, `in` or `range`. A
missing field (or a null payload) matches no condition except `exists: false` -- so `not` of a
condition on a missing field is true, as in Python, never SQL's unknown.

The same semantics are compiled to SQL for pre-filtering (service/store/payload_filter.py); the
tests check both agree on random payloads on SQLite and PostgreSQL. This module is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Scalar = str | int | float | bool
_MISSING = object()


@dataclass(frozen=True)
class Range:
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    def admits(self, x: float) -> bool:
        return ((self.gt is None or x > self.gt) and (self.gte is None or x >= self.gte)
                and (self.lt is None or x < self.lt) and (self.lte is None or x <= self.lte))


@dataclass(frozen=True)
class Condition:
    path: tuple[str, ...]
    op: Literal["eq", "in", "range", "exists"]
    value: Any  # Scalar for eq, tuple[Scalar, ...] for in, Range for range, bool for exists


@dataclass(frozen=True)
class All:
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    node: Node


Node = Condition | All | AnyOf | Not


def kind(value: Any) -> str:
    """'bool', 'num', 'str' or 'other' (lists, objects, null): values compare only within a kind."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "num"
    if isinstance(value, str):
        return "str"
    return "other"


def lookup(payload: Any, path: tuple[str, ...]) -> Any:
    value = payload
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _equal(value: Any, wanted: Scalar) -> bool:
    return kind(value) == kind(wanted) != "other" and value == wanted


def matches(node: Node, payload: dict | None) -> bool:
    """Whether a payload (None: the item has none) satisfies the filter."""
    if isinstance(node, All):
        return all(matches(n, payload) for n in node.nodes)
    if isinstance(node, AnyOf):
        return any(matches(n, payload) for n in node.nodes)
    if isinstance(node, Not):
        return not matches(node.node, payload)
    value = lookup(payload, node.path)
    if node.op == "exists":
        return (value is not _MISSING and value is not None) == node.value
    if value is _MISSING:
        return False
    if node.op == "eq":
        return _equal(value, node.value)
    if node.op == "in":
        return any(_equal(value, v) for v in node.value)
    return kind(value) == "num" and node.value.admits(value)


def fields_of(node: Node) -> set[tuple[str, ...]]:
    """Every payload path the filter reads (for checking declared payload indexes)."""
    if isinstance(node, Condition):
        return {node.path}
    if isinstance(node, Not):
        return fields_of(node.node)
    return set().union(*(fields_of(n) for n in node.nodes))
