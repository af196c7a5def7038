"""Drift-Adapter, residual MLP variant (after Vejendla, EMNLP 2025), with diagonal scaling.

    z = s ⊙ (W_P (x - mu_new) + MLP(x - mu_new)) + b     W_P: centred Procrustes (fixed)
    MLP: d_new -> hidden (512) -> d_old, GELU, output layer starting at zero

The paper's strongest variant: a small MLP learns what a rotation cannot, on top of it. Loss:
1 - cos(z, o) on the paired old vectors (the paper's point-wise alignment; its exact loss was not
available to verify). Early stopping on held-out pairing MRR. Needs many pairs: on ~2k an MLP of
this size overfits, and validation stops it at (or near) its Procrustes start.
"""

from __future__ import annotations

from adapters.methods.procrustes import procrustes_rotation
from adapters.registry import register_method
from adapters.residual_maps import ResidualMapAdapter


@register_method(candidate=True)
class DriftMLP(ResidualMapAdapter):
    name = "drift_mlp"

    @classmethod
    def default_params(cls) -> dict:
        return {**super().default_params(), "hidden": 512}

    def start(self, o, w, labels, seed):
        return procrustes_rotation(w, o)[: w.shape[1], : o.shape[1]].T.copy()

    def make_loss(self, net, o_t, w_t, codes_t):
        from adapters.training import cosine_loss

        return lambda idx: cosine_loss(net(w_t[idx]), o_t[idx])
