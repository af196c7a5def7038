"""Integer row ids at the edge: a value no id column can hold is answered before it reaches SQL.

Ids are `INTEGER` columns: int4 on PostgreSQL (≤ 2³¹−1), 64-bit on SQLite. Without a check,
`/v1/jobs/2147483648` made PostgreSQL raise "integer out of range" (a 500) and ids ≥ 2⁶³ overflowed
the SQLite driver. An id outside 1..2³¹−1 cannot name a row on either database, so a *path* id out
of range is simply unknown (404, like any other id without a row) and a *body* or query field out of
range is invalid input (422 naming the field) -- the same answer on both databases.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path
from pydantic import Field

from service.core.errors import NotFound

MAX_ROW_ID = 2**31 - 1  # the narrowest id column: int4 on PostgreSQL

RowIdField = Annotated[int, Field(ge=1, le=MAX_ROW_ID, strict=True)]  # for body / query fields
_RANGE = f"1..{MAX_ROW_ID}; anything else is unknown (404)"


def _checked(value: int, what: str, field: str) -> int:
    if not 1 <= value <= MAX_ROW_ID:
        raise NotFound(f"unknown {what} {value}", field)
    return value


async def _job_id(job_id: Annotated[int, Path(description=f"Job id, {_RANGE}.")]) -> int:
    return _checked(job_id, "job", "job_id")


async def _upgrade_id(upgrade_id: Annotated[int, Path(description=f"Upgrade id, {_RANGE}.")]) -> int:
    return _checked(upgrade_id, "upgrade", "upgrade_id")


async def _session_id(session_id: Annotated[int, Path(description=f"Session id, {_RANGE}.")]) -> int:
    return _checked(session_id, "session", "session_id")


JobId = Annotated[int, Depends(_job_id)]
UpgradeId = Annotated[int, Depends(_upgrade_id)]
SessionId = Annotated[int, Depends(_session_id)]
