"""Exact re-scoring of a quantised partition's candidates on the full vectors the database keeps.

An IVF partition with 8-bit or PQ codes (`IndexSpec.ivf_encoding`) holds approximations: its
scores are off by the quantisation error and near-ties come out in the wrong order. With
`ivf_rerank = r` the gallery asks the index for r·k candidates and re-scores them here against the
stored float32 vectors (the database is the source of truth, so they are always there), which
restores exact scores and most of the recall for one primary-key read of r·k rows per partition.
Memory stays at the codes' size; the full vectors stay on disk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from index import SearchResult

StoredVectors = Callable[[Sequence[int]], tuple[np.ndarray, np.ndarray]]


def exact_scores(queries: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """Higher-is-better scores as every index reports them: cosine, inner product, or the
    negated squared distance for l2."""
    q = queries.astype(np.float32, copy=False)
    v = vectors.astype(np.float32, copy=False)
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    if metric == "l2":
        return -((q * q).sum(1)[:, None] - 2 * q @ v.T + (v * v).sum(1)[None, :])
    return q @ v.T


def rescore_exactly(queries: np.ndarray, result: SearchResult, stored: StoredVectors, metric: str,
                    k: int) -> SearchResult:
    """The top k of each query's candidates by exact score. A candidate whose stored vector is
    gone (deleted or moved since the index was searched) is dropped, as the merge would drop it."""
    candidates = np.unique(result.ids[result.ids >= 0])
    if not len(candidates):
        return SearchResult.empty(len(queries), k)
    found, vectors = stored(candidates.tolist())
    if not len(found):
        return SearchResult.empty(len(queries), k)
    order = np.argsort(found)
    found, vectors = found[order], vectors[order]
    all_scores = exact_scores(queries, vectors, metric)  # queries x found
    position = np.clip(np.searchsorted(found, result.ids), 0, len(found) - 1)
    present = (result.ids >= 0) & (found[position] == result.ids)
    rows = np.arange(len(queries))[:, None]
    scores = np.where(present, all_scores[rows, position], -np.inf).astype(np.float32)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(scores, best, axis=1)
    top_ids = np.where(np.isfinite(top_scores), np.take_along_axis(result.ids, best, axis=1), -1)
    if top_ids.shape[1] < k:
        top_scores = np.pad(top_scores, ((0, 0), (0, k - top_ids.shape[1])), constant_values=-np.inf)
        top_ids = np.pad(top_ids, ((0, 0), (0, k - top_ids.shape[1])), constant_values=-1)
    return SearchResult(scores=top_scores, ids=top_ids.astype(np.int64))
