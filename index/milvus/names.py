"""Milvus collection names for partitions: derived from integer ids, never from user text.

One Milvus collection per partition (collection x model version), because Milvus fixes a vector
field's dimension per collection and model versions differ in dimension. Names are
`<prefix>c<collection>_m<model>`; the prefix lets several deployments (or test runs) share one
Milvus without seeing each other's collections. One more collection, `<prefix>tags`, holds each
collection's tag (the store's change counter of the last write applied).
"""

from __future__ import annotations

import re

from index.backend import PartitionKey

# Milvus: letters, digits and underscores, starting with a letter or underscore, <= 255 characters.
# The prefix is capped so that any key's name (two 19-digit ids) stays well inside that.
PREFIX_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def check_prefix(prefix: str) -> str:
    if not PREFIX_PATTERN.match(prefix):
        raise ValueError(f"Milvus collection prefix {prefix!r} must match {PREFIX_PATTERN.pattern}")
    return prefix


def partition_name(prefix: str, key: PartitionKey) -> str:
    return f"{prefix}c{key.collection}_m{key.model}"


def tags_name(prefix: str) -> str:
    return f"{prefix}tags"


def parse_partition_name(prefix: str, name: str) -> PartitionKey | None:
    """The key a name stands for, or None for a collection that is not one of ours."""
    if not name.startswith(prefix):
        return None
    match = re.fullmatch(r"c(\d{1,19})_m(\d{1,19})", name[len(prefix):])
    if match is None:
        return None
    try:
        return PartitionKey(int(match.group(1)), int(match.group(2)))
    except ValueError:
        return None
