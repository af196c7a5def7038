"""Orthogonal Procrustes (closed form; the baseline every learned method must beat).

Fit: rows are L2-normalised (the service compares by cosine); with `center` (default) the means
mu_new, mu_old are removed; the smaller side is zero-padded to D = max(d_old, d_new); then
W = U V^T from the SVD U S V^T = X_new^T X_old (D x D), the rotation that best maps new onto old.
Transform: z = (pad(x - mu_new) W)[:, :d_old] + mu_old.

Centring matters: some encoders (e5) put every vector near one shared direction, and a pure
rotation cannot move that direction onto the other model's (../shared/docs/data.md measures
orthogonal Procrustes at .064 top-1 on minilm->e5 without centring, .328 with it).
`center=False` gives the uncentred textbook variant (Drift-Adapter's first variant).
"""

from __future__ import annotations

import numpy as np

from adapters.base import Adapter, FitReport, ProgressFn
from adapters.moments import cross_moment
from adapters.registry import register_method
from adapters.vectors import as_matrix, normalize


def pad_to(x: np.ndarray, width: int) -> np.ndarray:
    if x.shape[1] == width:
        return x
    return np.hstack([x, np.zeros((len(x), width - x.shape[1]), dtype=x.dtype)])


def procrustes_rotation(x_new: np.ndarray, x_old: np.ndarray) -> np.ndarray:
    """The D x D orthogonal W minimising ||pad(x_new) W - pad(x_old)||_F, D = max widths."""
    width = max(x_new.shape[1], x_old.shape[1])
    m = np.zeros((width, width), dtype=np.float64)  # padding the product, not the data: same m, less work
    m[: x_new.shape[1], : x_old.shape[1]] = cross_moment(x_new, x_old)
    try:
        u, _, vt = np.linalg.svd(m)
    except np.linalg.LinAlgError:
        # LAPACK's divide-and-conquer SVD can fail to converge on a strongly rank-deficient m (few
        # pairs, zero padding: found on 160 pairs 384 -> 768). A ridge 1e-10 x |m| on the diagonal
        # only fixes the rotation inside m's null space, which the data leave undetermined anyway.
        u, _, vt = np.linalg.svd(m + 1e-10 * np.abs(m).max() * np.eye(width))
    return (u @ vt).astype(np.float32)


def centred_procrustes(x_old: np.ndarray, x_new: np.ndarray, center: bool = True):
    """The shared starting point of the linear methods: normalised rows, their means (zeros without
    centring) and the D x D rotation mapping centred new onto centred old.

    Returns (o, w, mu_old, mu_new, rotation) with o, w the normalised (uncentred) inputs.
    """
    o, w = normalize(x_old), normalize(x_new)
    if center:
        mu_old, mu_new = o.mean(axis=0), w.mean(axis=0)
    else:
        mu_old, mu_new = np.zeros(o.shape[1], np.float32), np.zeros(w.shape[1], np.float32)
    return o, w, mu_old, mu_new, procrustes_rotation(w - mu_new, o - mu_old)


@register_method(candidate=True, baseline=True)
class Procrustes(Adapter):
    name = "procrustes"

    @classmethod
    def default_params(cls) -> dict:
        return {"center": True}

    def _fit(self, x_old, x_new, labels, seed, progress: ProgressFn) -> FitReport:
        _, _, self.mu_old, self.mu_new, self.rotation = centred_procrustes(x_old, x_new, self.params["center"])
        progress(1.0, "procrustes: solved")
        return FitReport(method=self.name, steps=1)

    def transform(self, x_new: np.ndarray, x_old: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        w = normalize(as_matrix(x_new, "x_new")) - self.mu_new
        return (pad_to(w, self.rotation.shape[0]) @ self.rotation)[:, : self.d_old] + self.mu_old

    def forward(self, x_old: np.ndarray) -> np.ndarray:
        """Old -> new with the inverse rotation (W is orthogonal, so W^T)."""
        self._require_fitted()
        o = normalize(as_matrix(x_old, "x_old")) - self.mu_old
        return (pad_to(o, self.rotation.shape[0]) @ self.rotation.T)[:, : self.d_new] + self.mu_new

    def tensors(self) -> dict[str, np.ndarray]:
        return {"rotation": self.rotation, "mu_old": self.mu_old, "mu_new": self.mu_new}

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        self.rotation, self.mu_old, self.mu_new = tensors["rotation"], tensors["mu_old"], tensors["mu_new"]
