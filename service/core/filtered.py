"""How a filtered query runs: the plan follows the selectivity it observes.

1. **Probe (post-filter).** Search without the filter for a few times k hits per partition, drop
   the hits whose payload does not match. A broad filter is done here: its hits were among the
   unfiltered ones, at almost the cost of an unfiltered query (no SQL at all).
2. **Widen (post-filter).** Short of k hits, the share of matching candidates estimates the
   filter's selectivity f; if k / f (with 50 % to spare) is at most POSTFILTER_MAX_FETCH hits, search
   again that wide.
3. **Pre-filter.** A more selective filter would need too wide a search: the matching row ids are
   read from SQL instead -- few, since the filter is selective (an expression index serves them
   when the field is declared) -- and the index searches only those ids (index/: exact scoring of
   small sets, id selectors with a wider graph walk or more IVF lists for bigger ones; Milvus
   filters inside its search), so recall is that of an unfiltered search. Should more match than
   PREFILTER_MAX_IDS (a huge collection), post-filtering goes on, widening four times a step
   until the search covers the partition.

Every hit is checked against its item's current payload (filters.matches) before the merge, so
a payload changed between a SQL read and the search is never served against the filter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from index import SearchResult
from service.store import HitRecord, filters

PROBE_FACTOR = 4  # the first search asks each partition for 4 k hits (at least PROBE_MIN)
PROBE_MIN = 32
POSTFILTER_MAX_FETCH = 512  # wider than this: the filter is selective enough to pre-filter
PREFILTER_MAX_IDS = 20_000
OVERFETCH_SPARE = 1.5
WIDEN_FACTOR = 4


@dataclass
class FilterPlan:
    """The state of one filtered query between its searches (see the module docstring)."""

    k: int
    max_fetch: int  # the widest search that means anything (the largest partition, the backend's k limit)
    max_allowed_ids: int
    fetch: int = 0  # hits asked of each partition in the next search
    allowed: np.ndarray | None = None  # pre-filter: the only ids the index may return
    pre_filtered: bool = False
    read_sql: bool = False  # the matching ids were asked of SQL (once)
    searches: int = 0

    @classmethod
    def start(cls, k: int, largest: int, max_k: int, max_allowed_ids: int) -> FilterPlan:
        max_fetch = max(k, min(largest, max_k))
        return cls(k, max_fetch, min(PREFILTER_MAX_IDS, max_allowed_ids),
                   fetch=min(max_fetch, max(PROBE_MIN, PROBE_FACTOR * k)))

    @property
    def effort(self) -> float:
        """A post-filter search k' deep searches k'/k times as wide (ef, nprobe: IndexBackend.search),
        so its deep hits are as accurate as an unfiltered query's top k; a pre-filter's widening is
        the index's own (from the allowed fraction)."""
        return 1.0 if self.pre_filtered else max(1.0, self.fetch / self.k)

    def report(self) -> dict[str, int | str]:
        """What the answer says about how it was filtered."""
        if self.pre_filtered:
            return {"plan": "pre-filter", "matching": len(self.allowed), "searches": self.searches}
        return {"plan": "post-filter", "fetched": self.fetch, "searches": self.searches}

    def next_search(self, hits: list[list], matched: int, examined: int,
                    read_ids: Callable[[int], np.ndarray]) -> bool:
        """After a search: whether to search again, and how (updates fetch / allowed)."""
        self.searches += 1
        if self.pre_filtered or all(len(row) >= self.k for row in hits) or self.fetch >= self.max_fetch:
            return False
        if matched:
            need = math.ceil(OVERFETCH_SPARE * self.k * examined / matched)
            if need <= POSTFILTER_MAX_FETCH:
                self.fetch = min(self.max_fetch, max(need, self.fetch + 1))
                return True
        if not self.read_sql:  # selective: read the few matching ids
            self.read_sql = True
            ids = read_ids(self.max_allowed_ids + 1)
            if len(ids) <= self.max_allowed_ids:
                self.allowed, self.pre_filtered, self.fetch = ids, True, self.k
                return len(ids) > 0
            # more match than a pre-filter takes (a huge collection): keep widening instead
        self.fetch = min(self.max_fetch, self.fetch * WIDEN_FACTOR)
        return True


def drop_unmatched(results: dict[int, SearchResult], records: dict[int, HitRecord],
                   where: filters.Node) -> tuple[int, int]:
    """Blank (id -1, score -inf) every hit whose item is gone or whose payload does not match;
    (hits kept, hits examined), counting each returned hit once per partition."""
    verdict: dict[int, bool] = {}
    kept = examined = 0
    for result in results.values():
        ids = result.ids
        keep = np.zeros(ids.shape, dtype=bool)
        for index, item_id in np.ndenumerate(ids):
            if item_id < 0:
                continue
            ok = verdict.get(int(item_id))
            if ok is None:
                record = records.get(int(item_id))
                ok = verdict[int(item_id)] = record is not None and filters.matches(where, record.payload)
            keep[index] = ok
            examined += 1
            kept += ok
        result.ids = np.where(keep, ids, -1)
        result.scores = np.where(keep, result.scores, -np.inf).astype(np.float32)
    return kept, examined
