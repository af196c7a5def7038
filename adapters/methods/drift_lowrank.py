"""Drift-Adapter, low-rank affine variant (after Vejendla, EMNLP 2025), with diagonal scaling.

Drift-Adapter maps new-model queries into the legacy space so the existing index keeps serving;
its parameterisations are Procrustes (here: `procrustes`), a low-rank affine map and a residual MLP
(`drift_mlp`), fitted on paired samples, with an optional diagonal scaling of the output. Here:

    z = s ⊙ ((W_P + U V) (x - mu_new)) + b        W_P: centred Procrustes (fixed), U V rank r (64)

U V starts at zero (V random, U zero) and s at 1, so the fit starts at Procrustes; a low-rank
correction is what the paper's affine variant adds to a rotation when the two spaces differ by
more than one. Loss: 1 - cos(z, o) on the paired old vectors -- the paper's point-wise alignment
(its exact loss was not available to verify; on unit vectors MSE and 1 - cos order maps alike).
Early stopping on held-out pairing MRR (labels, when given, only for validation). Meant for many
unlabelled pairs (10k-100k re-embedded items); docs/adapters.md has the numbers.
"""

from __future__ import annotations

from adapters.methods.procrustes import procrustes_rotation
from adapters.registry import register_method
from adapters.residual_maps import ResidualMapAdapter


@register_method(candidate=True)
class DriftLowRank(ResidualMapAdapter):
    name = "drift_lowrank"

    @classmethod
    def default_params(cls) -> dict:
        return {**super().default_params(), "rank": 64}

    def start(self, o, w, labels, seed):
        return procrustes_rotation(w, o)[: w.shape[1], : o.shape[1]].T.copy()

    def make_loss(self, net, o_t, w_t, codes_t):
        from adapters.training import cosine_loss

        return lambda idx: cosine_loss(net(w_t[idx]), o_t[idx])
