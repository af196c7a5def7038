"""Payload filters compiled to SQL, and the expression indexes that make them fast.

The semantics are service/store/filters.py's, kept exactly (the tests compare both on random
payloads): type-exact matching, and every condition is true or false -- never SQL's unknown --
so `not` behaves as in Python when a field is missing.

- SQLite (JSON1): `json_type(payload, '$."a"."b"')` says what the value is (text, integer, real,
  true, false, null, object, array; NULL when missing), `json_extract` gives it.
- PostgreSQL (jsonb, migration 0007): `payload #> '{a,b}'` is the value as jsonb; equality of
  jsonb values is type-exact already ('"1"' <> '1', 'true' <> '1', '1' = '1.0'); ranges compare
  `(payload #>> '{a,b}')::float8` only where `jsonb_typeof` says number.

The path is written into the SQL as a literal, not a bound parameter: an expression index is used
only when the query repeats its expression verbatim. That is safe because a path's keys are
restricted to `[A-Za-z_][A-Za-z0-9_-]*` (schemas.FIELD_PATH_PATTERN), re-checked here.
"""

from __future__ import annotations

import json
import re

from sqlalchemy import ColumnElement, and_, cast, func, literal, literal_column, not_, or_, true
from sqlalchemy.dialects.postgresql import JSONB

from service.store import filters

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_NUMBER_TYPES = ("integer", "real")


def _checked(path: tuple[str, ...]) -> tuple[str, ...]:
    if not path or len(path) > 8 or not all(_KEY.match(part) for part in path):
        raise ValueError(f"not a filterable payload path: {'.'.join(path)!r}")
    return path


class SqlitePaths:
    """Expressions over `items.payload` for one path, as SQLite's JSON1 writes them."""

    def __init__(self, path: tuple[str, ...]) -> None:
        self.json_path = "$" + "".join(f'."{part}"' for part in _checked(path))
        self.value = literal_column(f"json_extract(items.payload, '{self.json_path}')")
        self.type = literal_column(f"json_type(items.payload, '{self.json_path}')")

    def index_expressions(self) -> list[str]:
        """One index serves equality and ranges (json_extract keeps numbers numeric)."""
        return [f"json_extract(payload, '{self.json_path}')"]

    def equals(self, value: filters.Scalar) -> ColumnElement:
        if isinstance(value, bool):
            return self.type == ("true" if value else "false")
        if isinstance(value, str):
            return and_(self.type == "text", self.value == value)
        return and_(self.type.in_(_NUMBER_TYPES), self.value == value)

    def in_range(self, bounds: filters.Range) -> ColumnElement:
        return and_(self.type.in_(_NUMBER_TYPES), *_bounds(self.value, bounds))

    def present(self) -> ColumnElement:
        return func.coalesce(self.type, "null") != "null"


class PostgresPaths:
    """Expressions over `items.payload` (jsonb) for one path."""

    def __init__(self, path: tuple[str, ...]) -> None:
        text_path = "{" + ",".join(_checked(path)) + "}"
        self.json_sql = f"(items.payload #> '{text_path}')"
        self.number_sql = (f"(CASE WHEN jsonb_typeof(items.payload #> '{text_path}') = 'number' "
                           f"THEN (items.payload #>> '{text_path}')::float8 END)")
        self.value = literal_column(self.json_sql, JSONB)
        self.number = literal_column(self.number_sql)

    def index_expressions(self) -> list[str]:
        """jsonb equality (eq, in) and the number (range) are two expressions: two indexes."""
        return [self.json_sql.replace("items.", ""), self.number_sql.replace("items.", "")]

    def equals(self, value: filters.Scalar) -> ColumnElement:
        return self.value == cast(literal(json.dumps(value)), JSONB)

    def in_range(self, bounds: filters.Range) -> ColumnElement:
        return and_(*_bounds(self.number, bounds))

    def present(self) -> ColumnElement:
        return func.coalesce(func.jsonb_typeof(self.value), "null") != "null"


def _bounds(value: ColumnElement, bounds: filters.Range) -> list[ColumnElement]:
    out = []
    for bound, compare in ((bounds.gt, value.__gt__), (bounds.gte, value.__ge__), (bounds.lt, value.__lt__),
                           (bounds.lte, value.__le__)):
        if bound is not None:
            out.append(compare(float(bound)))
    return out


def paths_for(dialect: str, path: tuple[str, ...]) -> SqlitePaths | PostgresPaths:
    if dialect == "sqlite":
        return SqlitePaths(path)
    if dialect == "postgresql":
        return PostgresPaths(path)
    raise ValueError(f"payload filters are not implemented for {dialect!r}")


def compile_filter(node: filters.Node, dialect: str) -> ColumnElement:
    """A WHERE clause over `items` that holds exactly where `filters.matches` is true.

    A condition on a missing field is NULL in SQL. Under `and` / `or` that is as good as false (a
    WHERE keeps only true rows), and leaves plain comparisons the planner can match to an index;
    only `not` must see two values, so it negates `x IS TRUE` (false for NULL) instead of `x`."""
    if isinstance(node, filters.All):
        return and_(*(compile_filter(n, dialect) for n in node.nodes))
    if isinstance(node, filters.AnyOf):
        return or_(*(compile_filter(n, dialect) for n in node.nodes))
    if isinstance(node, filters.Not):
        return not_(compile_filter(node.node, dialect).is_(true()))
    paths = paths_for(dialect, node.path)
    if node.op == "exists":
        return paths.present() if node.value else not_(paths.present())
    if node.op == "eq":
        return paths.equals(node.value)
    if node.op == "in":
        return or_(*(paths.equals(v) for v in node.value))
    return paths.in_range(node.value)
