"""`rank_distill`: a residual map trained to rank the old gallery as the new model ranks its own.

What a new-model client needs from a map is not its own item's old vector (point-wise alignment:
Procrustes, ridge, Drift-Adapter) but the new model's *ordering* of the gallery. The adjoint
(`adjoint`) gets there linearly in closed form; this method starts there and learns the rest:

    z = s ⊙ (G^T (x - mu_new) + MLP(x - mu_new)) + b
    G: the old -> new ridge regression (alpha 1), trained further; MLP as drift_mlp's

Loss (label-free): listwise distillation over each mini-batch -- KL(softmax(<n_i, n_j>/tau) ||
softmax(<z_i, o_j>/tau)), j != i: the new model's similarities among the batch's items are the
teacher, the mapped query's similarities to their *old* vectors the student (tau 0.05). Every
in-batch pair is a training signal, so many unlabelled pairs (a re-embedded sample of the gallery)
are exactly what it needs. Early stopping on agreement with the new model's 10 nearest neighbours
among held-out pairs (with labels: held-out retrieval, as the other methods). Measured against
point-wise objectives in docs/adapters.md (on 20k pairs, minilm -> mpnet: InfoNCE alignment fell
to .080 mAP@R, the listwise loss .103, Procrustes .098).
"""

from __future__ import annotations

from adapters.methods.affine import RidgeSolver
from adapters.registry import register_method
from adapters.residual_maps import ResidualMapAdapter


@register_method(candidate=True)
class RankDistill(ResidualMapAdapter):
    name = "rank_distill"
    train_linear = True

    @classmethod
    def default_params(cls) -> dict:
        return {**super().default_params(), "hidden": 512, "tau": 0.05, "alpha": 1.0}

    def start(self, o, w, labels, seed):
        return RidgeSolver(o, w).solve(float(self.params["alpha"]))  # G: o @ G ~ w, so z = x @ G.T

    def make_loss(self, net, o_t, w_t, codes_t):
        from adapters.training import listwise_distillation

        teacher = w_t + self._mu_new_t(w_t)
        tau = float(self.params["tau"])
        return lambda idx: listwise_distillation(net(w_t[idx]), o_t[idx], teacher[idx], teacher[idx], tau)

    def make_scorer(self, net, o_t, w_t, codes_t):
        from adapters.training import agreement_scorer, retrieval_scorer

        if codes_t is not None:
            return retrieval_scorer(lambda idx: net(w_t[idx]), o_t, codes_t)
        return agreement_scorer(lambda idx: net(w_t[idx]), o_t, w_t + self._mu_new_t(w_t))

    def _mu_new_t(self, like):
        import torch

        return torch.as_tensor(self.mu_new, device=like.device)[None, :]
