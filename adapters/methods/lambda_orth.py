"""λ-orthogonality regularisation (after Ricci et al., NeurIPS 2025), on frozen embeddings.

Map (new -> old): z = W (x_new - mu_new) + b, W in R^{d_old x d_new}, x_new L2-normalised.
W starts at the centred Procrustes solution and b at mu_old, so training starts from the best
orthogonal map and relaxes it only as far as the data supports.

Loss (per mini-batch; o = normalised old vector of the same item):
    L = (1 - cos(z, o))                                   alignment to the paired old vector
      + w_nce * InfoNCE(z, o; tau)                        label-free ranking term (batch negatives)
      + w_influence * CE(norm(z) P^T / tau, y)            only with labels; P = old-class prototypes
      + mu * relu(||G - I||_F / sqrt(r) - λ)^2            relaxed orthogonality penalty
with G = W W^T (r = d_old) when d_old <= d_new, else W^T W (r = d_new): the RMS deviation of the
Gram matrix from identity is free up to λ and penalised quadratically beyond. λ = 0 pins W to
(semi-)orthogonal; large λ leaves a free affine map. The published formula was not available to
verify; this is the documented variant (the benchmark sweeps λ).

Also learned: a *forward* map old -> new, v = W_f (x_old - mu_old) + b_f, fitted in closed form
(ridge) after training, for moving stored old vectors toward the new space during a partial
backfill.
"""

from __future__ import annotations

import numpy as np

from adapters.base import Adapter, FitReport, ProgressFn
from adapters.methods.affine import ridge
from adapters.methods.procrustes import centred_procrustes
from adapters.registry import register_method
from adapters.train_config import TRAIN_DEFAULTS, TrainConfig
from adapters.vectors import as_matrix, normalize


@register_method(candidate=True)
class LambdaOrth(Adapter):
    name = "lambda_orth"
    uses_labels = True

    @classmethod
    def default_params(cls) -> dict:
        return {**TRAIN_DEFAULTS, "lam": 0.1, "mu": 10.0, "w_nce": 0.5, "w_influence": 1.0, "tau": 0.05,
                "device": "auto", "forward_alpha": 1.0}

    def _fit(self, x_old, x_new, labels, seed, progress: ProgressFn) -> FitReport:
        import torch  # only to fit: serving the fitted map is numpy

        from adapters.networks import AffineMap, gram_deviation
        from adapters.training import (
            cosine_loss,
            influence_loss,
            info_nce,
            label_targets,
            pick_device,
            retrieval_scorer,
            seed_everything,
            to_tensor,
            train_loop,
        )

        p = self.params
        gen = seed_everything(seed)
        device = pick_device(p["device"])
        o, w, mu_old, mu_new, rot = centred_procrustes(x_old, x_new)  # rot: D x D, rows index new dims
        init = rot[: self.d_new, : self.d_old].T.copy()  # d_old x d_new
        module = AffineMap(init, mu_old, mu_new).to(device)
        o_t, w_t = to_tensor(o, device), to_tensor(w, device)
        codes_t, protos, _ = label_targets(labels, o_t)

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            z, target = module(w_t[idx]), o_t[idx]
            loss = cosine_loss(z, target) + p["w_nce"] * info_nce(z, target, p["tau"])
            if protos is not None:
                loss = loss + p["w_influence"] * influence_loss(z, protos, codes_t[idx], p["tau"])
            excess = torch.relu(gram_deviation(module.weight) - p["lam"])
            return loss + p["mu"] * excess**2

        scorer = retrieval_scorer(lambda idx: module(w_t[idx]), o_t, codes_t)
        report = train_loop(module, loss_fn, len(o), TrainConfig.from_params(p), gen, progress, self.name, scorer)
        self.weight = module.weight.detach().cpu().numpy()
        self.bias = module.bias.detach().cpu().numpy()
        self.mu_new = mu_new
        report.notes["gram_deviation"] = float(gram_deviation(module.weight.detach()))
        # forward map old -> new (closed form), used for partial backfill
        self.fwd_weight, self.fwd_bias = ridge(o, w, p["forward_alpha"])
        return report

    def transform(self, x_new: np.ndarray, x_old: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        return (normalize(as_matrix(x_new, "x_new")) - self.mu_new) @ self.weight.T + self.bias

    def forward(self, x_old: np.ndarray) -> np.ndarray:
        self._require_fitted()
        return normalize(as_matrix(x_old, "x_old")) @ self.fwd_weight + self.fwd_bias

    def tensors(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "bias": self.bias, "mu_new": self.mu_new,
                "fwd_weight": self.fwd_weight, "fwd_bias": self.fwd_bias}

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        for key, value in tensors.items():
            setattr(self, key, value)

