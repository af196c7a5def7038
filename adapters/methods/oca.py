"""OCA: Orthogonal Compatible Aligned layer (after Ricci et al., 2024; reference code z3n0e/OCA).

Published form: the new backbone is trained together with an orthogonal layer whose first d_old
outputs are compatible with the old model. Here the backbone is frozen, so OCA is the layer alone:

    h(x) = Q · pad_D(x_new - mu_new),  D = max(d_new, d_old + k),  Q ∈ O(D) learned
    new/old: z = h(x)[:d_old] + mu_old   (compared by cosine with old vectors)
    new/new: h(x) (all D dims); Q is orthogonal, so new/new geometry of the centred new vectors
             is kept exactly -- the upgrade costs new/new accuracy nothing.

Q is parametrised with `torch.nn.utils.parametrizations.orthogonal` (stays exactly orthogonal at
every step) and initialised at the centred Procrustes rotation.

Losses (o = normalised old vector of the same item):
    always:      (1 - cos(z, o)) + w_nce * InfoNCE(z, o; tau)
    with labels: + 5 * CE_ls(classifier(h), y)            label smoothing 0.1, linear head on h
                 + 10 * CE(norm(z) P^T / tau, y)           influence loss, P = old-class prototypes
                 + 5 * (1 - cos(z, P[y]))                  cosine to the old-class prototype
(the published weights 5 / 10 / 5, times `label_weight`, default 1). The classifier head starts at
the class means of the initial output, so early steps do not follow a random head.
Deviation from the paper: centring (mu_new, mu_old), which a pure rotation needs when an encoder's
vectors share a strong common direction (e5).
"""

from __future__ import annotations

import numpy as np

from adapters.base import Adapter, FitReport, ProgressFn
from adapters.methods.procrustes import centred_procrustes, pad_to
from adapters.registry import register_method
from adapters.train_config import TRAIN_DEFAULTS, TrainConfig
from adapters.vectors import as_matrix, normalize


def extend_to_orthogonal(rotation: np.ndarray, width: int) -> np.ndarray:
    """Embed a smaller orthogonal matrix in the top-left of a width x width identity."""
    out = np.eye(width, dtype=np.float32)
    out[: rotation.shape[0], : rotation.shape[1]] = rotation
    return out


@register_method(candidate=True)
class OCA(Adapter):
    name = "oca"
    uses_labels = True

    @classmethod
    def default_params(cls) -> dict:
        return {**TRAIN_DEFAULTS, "extra_dims": 32, "w_nce": 0.5, "tau": 0.05, "label_weight": 1.0,
                "label_smoothing": 0.1, "device": "auto"}

    def _fit(self, x_old, x_new, labels, seed, progress: ProgressFn) -> FitReport:
        import torch  # only to fit: serving Q is numpy
        from torch import nn

        from adapters.networks import OrthogonalLayer
        from adapters.training import (
            cosine_loss,
            influence_loss,
            info_nce,
            label_targets,
            pick_device,
            prototype_cosine_loss,
            prototypes,
            retrieval_scorer,
            seed_everything,
            to_tensor,
            train_loop,
        )

        p = self.params
        gen = seed_everything(seed)
        device = pick_device(p["device"])
        o, w, self.mu_old, self.mu_new, rot = centred_procrustes(x_old, x_new)  # x @ rot maps new -> old
        width = max(self.d_new, self.d_old + int(p["extra_dims"]))
        init = extend_to_orthogonal(rot.T, width)  # layer computes W x, so W = rot^T
        o_t = to_tensor(o, device)
        codes_t, protos, n_classes = label_targets(labels, o_t)
        layer = OrthogonalLayer(init, n_classes).to(device)
        w_t = to_tensor(pad_to(w - self.mu_new, width), device)
        if layer.head is not None:
            # Start the classifier at the class means of the initial output (a nearest-prototype
            # classifier) so its first gradients refine Q instead of scrambling it.
            with torch.no_grad():
                layer.head.weight.copy_(prototypes(layer(w_t), codes_t, n_classes) / p["tau"])
                layer.head.bias.zero_()
        mu_old_t = to_tensor(self.mu_old[None, :], device)
        d_old = self.d_old

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            h = layer(w_t[idx])
            z, target = h[:, :d_old] + mu_old_t, o_t[idx]
            loss = cosine_loss(z, target) + p["w_nce"] * info_nce(z, target, p["tau"])
            if protos is not None:
                y = codes_t[idx]
                ce = nn.functional.cross_entropy(layer.head(h), y, label_smoothing=p["label_smoothing"])
                supervised = 5 * ce + 10 * influence_loss(z, protos, y, p["tau"]) + 5 * prototype_cosine_loss(
                    z, protos, y
                )
                loss = loss + p["label_weight"] * supervised
            return loss

        scorer = retrieval_scorer(lambda idx: layer(w_t[idx])[:, :d_old] + mu_old_t, o_t, codes_t)
        report = train_loop(layer, loss_fn, len(o), TrainConfig.from_params(p), gen, progress, self.name, scorer)
        with torch.no_grad():
            self.q = layer.linear.weight.detach().cpu().numpy().astype(np.float32)
        report.notes["width"] = width
        return report

    def _h(self, x_new: np.ndarray) -> np.ndarray:
        w = normalize(as_matrix(x_new, "x_new")) - self.mu_new
        return pad_to(w, self.q.shape[0]) @ self.q.T

    def transform(self, x_new: np.ndarray, x_old: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        return self._h(x_new)[:, : self.d_old] + self.mu_old

    def transform_new(self, x_new: np.ndarray) -> np.ndarray:
        self._require_fitted()
        return self._h(x_new)

    def tensors(self) -> dict[str, np.ndarray]:
        return {"q": self.q, "mu_old": self.mu_old, "mu_new": self.mu_new}

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        self.q, self.mu_old, self.mu_new = tensors["q"], tensors["mu_old"], tensors["mu_new"]
