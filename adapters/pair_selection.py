"""Which training pairs to fit on: the ones nearest to the gallery the map will serve.

Why: a transformation is fitted on re-embedded pairs and serves queries against the stored gallery.
When the pairs are not drawn like the gallery -- another catalogue, the newest items, a query-log
sample, or a gallery whose categories are balanced where the pairs' are not -- a map fitted to
all pairs spends its capacity where the gallery is not. The gallery's *old* vectors are stored
anyway (no re-embedding), so the pairs can be chosen by them: every gallery item brings the
`per_item` training pairs nearest to it by the old model (cosine), and the map is fitted on their
union. Measured in docs/adapters.md ("Fitting where the gallery is"): on WordNet-20k development
splits it raised the adjoint's top-1 and mAP@R and the memory's mAP@R, on a category-balanced
gallery most.

Only the gallery's old vectors are read: never its new vectors (there are none before a backfill)
nor its labels, so the pairs a number is reported on stay unseen.
"""

from __future__ import annotations

import numpy as np

from adapters.vectors import as_matrix, normalize

GALLERY_CHUNK = 1_024  # gallery rows per (chunk x pairs) similarity block: bounds memory


def pairs_near_gallery(pairs_old: np.ndarray, gallery_old: np.ndarray, per_item: int) -> np.ndarray:
    """Sorted indices of the training pairs that are among the `per_item` nearest (by cosine between
    old vectors) of at least one gallery item."""
    if isinstance(per_item, bool) or not isinstance(per_item, int) or per_item < 1:
        raise ValueError(f"per_item must be an integer >= 1, got {per_item!r}")
    pairs = normalize(as_matrix(pairs_old, "pairs_old"))
    gallery = normalize(as_matrix(gallery_old, "gallery_old"))
    if pairs.shape[1] != gallery.shape[1]:
        raise ValueError(f"gallery_old has dimension {gallery.shape[1]} but pairs_old {pairs.shape[1]}")
    if per_item >= len(pairs):  # every gallery item brings every pair
        return np.arange(len(pairs))
    chosen = np.zeros(len(pairs), dtype=bool)
    for start in range(0, len(gallery), GALLERY_CHUNK):
        sims = gallery[start : start + GALLERY_CHUNK] @ pairs.T
        chosen[np.argpartition(-sims, per_item - 1, axis=1)[:, :per_item].ravel()] = True
    return np.flatnonzero(chosen)
