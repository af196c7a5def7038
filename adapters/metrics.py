"""Retrieval metrics for compatibility, exactly as ../shared/docs/methods.md defines them.

Setting: the held-out items are both the queries and the gallery; each query is excluded from its
own gallery (leave-one-out); similarity is cosine; a gallery item is relevant when it has the
query's label. Rankings are full (every gallery item is ranked), computed in query chunks so that
50k x 50k evaluations fit in memory (a chunk holds `chunk x n_gallery` scores).

Metrics per query, averaged over queries that have at least one relevant item:
- top-k (CMC): 1 if a relevant item is within the first k results;
- AP (mAP): mean over relevant items of precision at that item's rank, over the full ranking;
- AP@R (mAP@R): with R the number of relevant items, sum over ranks i <= R of P(i)·rel(i), / R.
Same-item pairing (no labels): the query's own item in the other model is the one relevant
gallery item; Recall@k and MRR.

Ties between scores are broken by gallery position (stable sort), so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from adapters.vectors import normalize

DEFAULT_CHUNK = 1024


@dataclass(frozen=True)
class RetrievalMetrics:
    """M(q, g): retrieval quality with queries from model q against a gallery from model g."""

    top1: float
    top5: float
    mAP: float
    mAP_at_R: float
    queries: int

    def as_dict(self) -> dict[str, float]:
        return {"top1": self.top1, "top5": self.top5, "mAP": self.mAP, "mAP@R": self.mAP_at_R}


@dataclass(frozen=True)
class PairingMetrics:
    """Same-item retrieval: query i's relevant gallery item is item i itself (other model)."""

    recall_at_1: float
    recall_at_10: float
    mrr: float

    def as_dict(self) -> dict[str, float]:
        return {"recall@1": self.recall_at_1, "recall@10": self.recall_at_10, "MRR": self.mrr}


@dataclass
class _RankedTotals:
    """Sums over queries of top-k hits, AP and AP@R, from relevance flags in rank order.

    The one implementation of the chunked ranking loop: every leave-one-out metric here builds, per
    chunk of queries, a boolean matrix `rel[i, r]` (is the item at rank r relevant to query i?)
    and adds it. Queries with no relevant item are not counted.
    """

    top_k: Sequence[int] = (1, 5)
    hits: dict[int, float] = field(default_factory=dict)
    ap: float = 0.0
    apr: float = 0.0
    counted: int = 0

    def add(self, rel: np.ndarray) -> None:
        n_rel = rel.sum(axis=1)
        valid = n_rel > 0
        if not valid.any():
            return
        rel, n_rel = rel[valid], n_rel[valid]
        positions = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
        for k in self.top_k:
            self.hits[k] = self.hits.get(k, 0.0) + float(rel[:, :k].any(axis=1).sum())
        precision_at_hit = np.where(rel, np.cumsum(rel, axis=1) / positions, 0.0)
        self.ap += float((precision_at_hit.sum(axis=1) / n_rel).sum())
        within_r = positions[None, :] <= n_rel[:, None]
        self.apr += float((np.where(within_r, precision_at_hit, 0.0).sum(axis=1) / n_rel).sum())
        self.counted += int(valid.sum())

    def metrics(self) -> RetrievalMetrics:
        if self.counted == 0:
            raise ValueError("no query has a relevant item in the gallery")
        n = self.counted
        return RetrievalMetrics(self.hits.get(1, 0.0) / n, self.hits.get(5, 0.0) / n, self.ap / n, self.apr / n, n)


def _ranked_totals(n_queries: int, chunk: int, rank_chunk: Callable[[int, int], np.ndarray],
                   top_k: Sequence[int] = (1, 5)) -> _RankedTotals:
    """Run `rank_chunk(start, stop)` (relevance in rank order for those queries) over every chunk."""
    totals = _RankedTotals(top_k=tuple(top_k))
    for start in range(0, n_queries, chunk):
        totals.add(rank_chunk(start, min(start + chunk, n_queries)))
    return totals


def _ranked(scores: np.ndarray, exclude_from: int | None) -> np.ndarray:
    """Gallery order per query, best first, ties in gallery order; with `exclude_from`, query i's
    own item (column exclude_from + i) scores -inf and so ranks last.

    numpy's default sort is about twice as fast as its stable one but orders ties arbitrarily, so
    rows it sorted with a tie (or a NaN) are sorted again stably: the result is the stable sort's.
    """
    if exclude_from is not None:
        rows = np.arange(len(scores))
        scores[rows, exclude_from + rows] = -np.inf
    negated = -scores
    order = np.argsort(negated, axis=1)
    _resort_ties(negated, order, np.take_along_axis(negated, order, axis=1), order.shape[1])
    return order


def _resort_ties(negated: np.ndarray, head: np.ndarray, head_scores: np.ndarray, depth: int) -> None:
    """In place: rows of `head` (first `depth` of each ranking, from an unstable sort) that hold a
    tie, a NaN, or tie across the cut, replaced by the stable sort's first `depth`."""
    unsure = (head_scores[:, 1:] <= head_scores[:, :-1]).any(axis=1) | np.isnan(head_scores).any(axis=1)
    if depth < negated.shape[1]:
        unsure |= (negated <= head_scores[:, -1:]).sum(axis=1) > depth
    rows = np.flatnonzero(unsure)
    if len(rows):
        head[rows] = np.argsort(negated[rows], axis=1, kind="stable")[:, :depth]


def _ranked_head(scores: np.ndarray, exclude_from: int | None, depth: int) -> np.ndarray:
    """The first `depth` columns of `_ranked(scores, exclude_from)`, without sorting the rest.

    Why: metrics that stop at rank R (top-1, AP@R) need only each query's head, and sorting whole
    rows was nearly all of the adjoint's and auto's selection time at 100k pairs. The head is
    found by partition and sorted; rows with ties in it or across the cut are sorted again stably
    (`_resort_ties`), so the head equals the full ranking's.
    """
    if depth * 4 >= scores.shape[1] * 3:  # a partition saves little: sort
        return _ranked(scores, exclude_from)[:, :depth]
    if exclude_from is not None:
        rows = np.arange(len(scores))
        scores[rows, exclude_from + rows] = -np.inf
    negated = -scores
    head = np.argpartition(negated, depth - 1, axis=1)[:, :depth]
    head_scores = np.take_along_axis(negated, head, axis=1)
    order = np.argsort(head_scores, axis=1)
    head = np.take_along_axis(head, order, axis=1)
    _resort_ties(negated, head, np.take_along_axis(head_scores, order, axis=1), depth)
    return head


def _head_quality(rel_head: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """(rows, 2): top-1 hit and AP@R per query from relevance flags of its ranking's head (at least
    max(n_rel) long) and its total number of relevant items; NaN rows where nothing is relevant."""
    positions = np.arange(1, rel_head.shape[1] + 1, dtype=np.float64)
    within_r = positions[None, :] <= n_rel[:, None]
    precision = np.cumsum(rel_head, axis=1) / positions
    apr = np.where(within_r & rel_head, precision, 0.0).sum(axis=1) / np.maximum(n_rel, 1)
    rows = np.stack([rel_head[:, 0].astype(np.float64), apr], axis=1)
    rows[n_rel == 0] = np.nan
    return rows


def _labels_as_codes(labels: Sequence | np.ndarray) -> np.ndarray:
    """Any labels (ints, strings) -> int codes, so comparisons are cheap."""
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    return codes.astype(np.int64)


def retrieval_metrics(
    queries: np.ndarray,
    gallery: np.ndarray,
    labels: Sequence | np.ndarray,
    *,
    exclude_self: bool = True,
    top_k: Sequence[int] = (1, 5),
    chunk: int = DEFAULT_CHUNK,
) -> RetrievalMetrics:
    """Leave-one-out retrieval of `queries[i]` over `gallery` (row i is the same item as query i).

    `queries` and `gallery` must already be in one comparable space (same width).
    """
    q = normalize(queries)
    g = normalize(gallery)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"queries have width {q.shape[1]}, gallery {g.shape[1]}")
    if exclude_self and len(q) != len(g):
        raise ValueError("leave-one-out needs the same items as queries and gallery")
    codes = _labels_as_codes(labels)
    if len(codes) != len(g):
        raise ValueError("one label per gallery item is required")

    def rank_chunk(start: int, stop: int) -> np.ndarray:
        order = _ranked(q[start:stop] @ g.T, start if exclude_self else None)
        rel = codes[order] == codes[start:stop, None]
        if exclude_self:
            rel[:, -1] = False  # the query itself is ranked last (score -inf) and is never relevant
        return rel

    return _ranked_totals(len(q), chunk, rank_chunk, top_k).metrics()


def _head_qualities(queries: np.ndarray, gallery: np.ndarray, n_rel: np.ndarray,
                    relevant: Callable[[np.ndarray, int, int], np.ndarray], chunk: int) -> np.ndarray:
    """(n, 2) top-1 hit and AP@R per leave-one-out query, ranking only each query's first R items:
    `n_rel[i]` is query i's number of relevant items, `relevant(head, start, stop)` flags the
    ranked head ids of queries start..stop."""
    q, g = normalize(queries), normalize(gallery)
    out = []
    for start in range(0, len(q), chunk):
        stop = min(start + chunk, len(q))
        depth = int(max(1, min(len(g) - 1, n_rel[start:stop].max())))
        head = _ranked_head(q[start:stop] @ g.T, start, depth)
        out.append(_head_quality(relevant(head, start, stop), n_rel[start:stop]))
    return np.concatenate(out) if out else np.empty((0, 2))


def _mean_ap_at_r(quality: np.ndarray) -> float:
    """mAP@R over the queries that have a relevant item (as `retrieval_metrics` counts them)."""
    if np.isnan(quality[:, 1]).all():
        raise ValueError("no query has a relevant item in the gallery")
    return float(np.nanmean(quality[:, 1]))


def per_query_quality(queries: np.ndarray, gallery: np.ndarray, labels: Sequence | np.ndarray,
                      *, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """(n, 2) array: each query's top-1 hit and AP@R under `retrieval_metrics`' protocol (NaN rows
    for queries with no relevant item) -- for paired comparisons of two maps on the same queries.
    Only each ranking's first R items are ordered (`_ranked_head`)."""
    codes = _labels_as_codes(labels)
    if len(queries) != len(gallery) or len(codes) != len(gallery):
        raise ValueError("leave-one-out needs the same items as queries and gallery, one label each")
    n_rel = np.bincount(codes)[codes] - 1  # same label, less the query's own item
    return _head_qualities(queries, gallery, n_rel,
                           lambda head, start, stop: codes[head] == codes[start:stop, None], chunk)


def map_at_r(queries: np.ndarray, gallery: np.ndarray, labels: Sequence | np.ndarray,
             *, chunk: int = DEFAULT_CHUNK) -> float:
    """`retrieval_metrics(...).mAP_at_R` (leave-one-out) at the cost of ranking heads only."""
    return _mean_ap_at_r(per_query_quality(queries, gallery, labels, chunk=chunk))


def neighbour_map_at_r(queries: np.ndarray, gallery: np.ndarray, neighbours: np.ndarray,
                       *, chunk: int = DEFAULT_CHUNK) -> float:
    """`neighbour_metrics(...).mAP_at_R` at the cost of ranking heads only (at most k items deep)."""

    def relevant(head: np.ndarray, start: int, stop: int) -> np.ndarray:
        nb = neighbours[start:stop]
        return ((head[:, :, None] == nb[:, None, :]) & (nb[:, None, :] >= 0)).any(axis=2)

    return _mean_ap_at_r(_head_qualities(queries, gallery, (neighbours >= 0).sum(axis=1), relevant, chunk))


def pairing_metrics(queries: np.ndarray, gallery: np.ndarray, *, chunk: int = DEFAULT_CHUNK) -> PairingMetrics:
    """Recall@1, Recall@10 and MRR of finding item i's gallery vector with item i's query vector."""
    q = normalize(queries)
    g = normalize(gallery)
    if q.shape != g.shape:
        raise ValueError(f"paired queries {q.shape} and gallery {g.shape} must have the same shape")
    r1 = r10 = rr = 0.0
    for start in range(0, len(q), chunk):
        stop = min(start + chunk, len(q))
        scores = q[start:stop] @ g.T
        own = scores[np.arange(stop - start), np.arange(start, stop)]
        # rank = 1 + number of items scoring strictly higher, + ties placed before it (stable order)
        higher = (scores > own[:, None]).sum(axis=1)
        ties_before = np.array(
            [(scores[i, : start + i] == own[i]).sum() for i in range(stop - start)], dtype=np.int64
        )
        rank = 1 + higher + ties_before
        r1 += float((rank <= 1).sum())
        r10 += float((rank <= 10).sum())
        rr += float((1.0 / rank).sum())
    n = len(q)
    return PairingMetrics(r1 / n, r10 / n, rr / n)


def consensus_neighbours(old: np.ndarray, new: np.ndarray, k: int = 10, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """Pseudo-relevance for label-free evaluation: each item's consensus neighbours.

    Item j is relevant to query i when j is among i's k nearest neighbours under *both* models
    (i itself excluded) -- a relevance that favours neither model. Returns an (n, k) array of
    gallery indices, -1 where fewer than k neighbours agree.
    """
    o, w = normalize(old), normalize(new)
    n = len(o)
    k = min(k, n - 1)
    out = np.full((n, k), -1, dtype=np.int64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        rows = np.arange(stop - start)
        tops = []
        for space in (o, w):
            s = space[start:stop] @ space.T
            s[rows, np.arange(start, stop)] = -np.inf
            tops.append(np.argpartition(-s, k, axis=1)[:, :k])
        for i in rows:
            agreed = np.intersect1d(tops[0][i], tops[1][i])
            out[start + i, : len(agreed)] = agreed
    return out


def cluster_labels(x: np.ndarray, items_per_cluster: int = 20, seed: int = 0) -> np.ndarray:
    """Pseudo-labels for choosing between maps without labels: spherical k-means clusters.

    `auto` calls it on the joint embeddings [normalize(old), normalize(new)]: groups both models
    agree on, the category-like structure a good map should retrieve. Item-level neighbourhoods do
    not work for this choice: consensus neighbours are old-model neighbours by construction, so
    they reward mapping a query onto its own old vector (Procrustes) over maps that rank the
    gallery as the new model would (docs/adapters.md shows both against true labels).
    """
    import faiss  # the project's vector library; imported here so metrics stay light to import

    w = np.ascontiguousarray(normalize(x), dtype=np.float32)
    k = max(2, min(len(w) // max(2, items_per_cluster), len(w) - 1))
    kmeans = faiss.Kmeans(w.shape[1], k, niter=20, seed=seed, spherical=True, min_points_per_centroid=1)
    kmeans.train(w)
    _, assigned = kmeans.index.search(w, 1)
    return assigned[:, 0].astype(np.int64)


def neighbour_metrics(
    queries: np.ndarray, gallery: np.ndarray, neighbours: np.ndarray, *, chunk: int = DEFAULT_CHUNK
) -> RetrievalMetrics:
    """Leave-one-out retrieval where query i's relevant items are `neighbours[i]` (-1 = none)."""
    q, g = normalize(queries), normalize(gallery)

    def rank_chunk(start: int, stop: int) -> np.ndarray:
        order = _ranked(q[start:stop] @ g.T, start)
        relevant = np.zeros((stop - start, len(g)), dtype=bool)
        nb = neighbours[start:stop]
        r_idx, c_idx = np.nonzero(nb >= 0)
        relevant[r_idx, nb[r_idx, c_idx]] = True
        return np.take_along_axis(relevant, order, axis=1)

    return _ranked_totals(len(q), chunk, rank_chunk).metrics()


def scores_quality(scores: np.ndarray, relevant: np.ndarray, *, chunk: int = DEFAULT_CHUNK) -> RetrievalMetrics:
    """Leave-one-out metrics of a precomputed (n, n) score matrix (the diagonal is ignored), where
    `relevant[i, j]` says whether gallery item j is relevant to query i."""

    def rank_chunk(start: int, stop: int) -> np.ndarray:
        order = _ranked(np.array(scores[start:stop], dtype=np.float64), start)
        rel_mask = np.array(relevant[start:stop], dtype=bool)
        rel_mask[np.arange(stop - start), np.arange(start, stop)] = False
        return np.take_along_axis(rel_mask, order, axis=1)

    return _ranked_totals(len(scores), chunk, rank_chunk).metrics()


def map_at_r_from_scores(scores: np.ndarray, relevant: np.ndarray, *, chunk: int = DEFAULT_CHUNK) -> float:
    """mAP@R of a precomputed (n, n) score matrix (see `scores_quality`); nan if nothing is relevant."""
    try:
        return scores_quality(scores, relevant, chunk=chunk).mAP_at_R
    except ValueError:
        return float("nan")


# ---- compatibility summaries ------------------------------------------------------------------
def passes_ecc(cross: float, old_old: float) -> bool:
    """Empirical compatibility criterion: M(new->old) > M(old/old)."""
    return cross > old_old


def gap_closed(cross: float, old_old: float, new_new: float) -> float:
    """Share of the full-backfill gain obtained without backfill (nan when new/new <= old/old)."""
    gain = new_new - old_old
    return float("nan") if gain <= 0 else (cross - old_old) / gain


def compatibility_summary(matrix: Sequence[Sequence[float]]) -> dict[str, float]:
    """AC and AM of a lower-triangular compatibility matrix C[i][j] (query model i, gallery j <= i).

    AC = share of pairs i > j with C[i][j] > C[j][j]; AM = mean of the lower triangle with the
    diagonal. With a single model AC is undefined (nan).
    """
    c = [list(row) for row in matrix]
    t = len(c)
    pairs = [(i, j) for i in range(t) for j in range(i)]
    ac = sum(c[i][j] > c[j][j] for i, j in pairs) / len(pairs) if pairs else float("nan")
    lower = [c[i][j] for i in range(t) for j in range(i + 1)]
    return {"AC": float(ac), "AM": float(np.mean(lower))}


def neighbour_agreement(queries: np.ndarray, gallery: np.ndarray, reference: np.ndarray, k: int = 10,
                        *, chunk: int = DEFAULT_CHUNK) -> float:
    """Mean overlap between each query's top k over `gallery` and item i's top k under `reference`
    (leave-one-out, both ranked over the same n items): how closely a map's new/old ranking follows
    the reference model's own (new/new) ranking."""
    q, g, r = normalize(queries), normalize(gallery), normalize(reference)
    n = len(q)
    k = min(k, n - 1)
    total = 0.0
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        rows = np.arange(stop - start)
        tops = []
        for a, b in ((q, g), (r, r)):
            s = a[start:stop] @ b.T
            s[rows, np.arange(start, stop)] = -np.inf
            tops.append(np.argpartition(-s, k, axis=1)[:, :k])
        total += sum(len(np.intersect1d(x, y)) for x, y in zip(*tops, strict=True)) / k
    return total / n
