"""OCA: Orthogonal Compatible Aligned layer (after Ricci et al., 2024; reference code z3n0e/OCA),
as a post-hoc layer on the frozen new encoder.

Reference (trainers/OCA_trainer.py, models/resnet.py: ResNet_OCA): the backbone emits a feature f of
d_old + k dims; its first d_old coordinates are the compatible feature compared with the old
model; an orthogonal layer (with bias) followed by a linear classifier reads all of f. Loss, with P
the pseudo-classifier (per-class means of the normalised old features, not re-normalised):

    5 * CE_ls(classifier(Q f + c), y)               label smoothing 0.1
  + 10 * CE_ls(normalize(f[:d_old]) @ P^T, y)       influence loss, no temperature
  + 5 * (1 - cos(P[y], normalize(f[:d_old])))       cosine to the old-class prototype
Adam lr 1e-3, weight decay 3.05e-5, cosine schedule, batch 64 (configs/train/cifar100_OCA.yaml).

What the frozen-encoder setting forces (the backbone cannot be trained, so the trainable "backbone"
is a D x D orthogonal layer over the frozen new vector):

    f(x) = Q · pad_D(x - mu_new),  D = max(d_new, d_old + k),  Q ∈ O(D)   (Cayley parametrisation)
    new/old: z = f(x)[:d_old] + mu_old (compared by cosine with old vectors)
    new/new: f(x), all D dims -- Q is orthogonal, so the new model's geometry is kept exactly and
             the upgrade costs new/new accuracy nothing (the method's point)
- Q starts at the centred Procrustes rotation (a from-scratch backbone has no such start), so
  training can only move away from the best orthogonal alignment where the losses say so.
- The reference's orthogonal layer in front of the classifier is folded into the classifier: an
  orthogonal map with bias followed by a free linear layer is a free affine layer (same function
  class, one D x D Cayley solve less per step).
- Centring (mu_new, mu_old): a rotation cannot move a direction every vector shares (e5) onto the
  other model's; the reference's encoders are trained to be compatible and need none.
- Every term needs labels: without them OCA has no objective at all (on an orthogonal layer,
  alignment to the paired old vectors is solved exactly by Procrustes). It refuses to fit without
  labels rather than return Procrustes under its own name; `auto` does not offer it then.
The classifier head starts at the class means of the initial output (a nearest-prototype
classifier), so the first steps refine Q instead of following a random head.
"""

from __future__ import annotations

import numpy as np

from adapters.base import Adapter, FitReport, ProgressFn
from adapters.methods.procrustes import centred_procrustes, pad_to
from adapters.registry import register_method
from adapters.train_config import AUTO_MIN_PAIRS, TRAIN_DEFAULTS, TrainConfig
from adapters.vectors import as_matrix, normalize

REFERENCE_TRAINING = {"lr": 1e-3, "weight_decay": 3.0517578125e-05, "batch_size": 64}


def extend_to_orthogonal(rotation: np.ndarray, width: int) -> np.ndarray:
    """Embed a smaller orthogonal matrix in the top-left of a width x width identity."""
    out = np.eye(width, dtype=np.float32)
    out[: rotation.shape[0], : rotation.shape[1]] = rotation
    return out


@register_method(candidate=True)
class OCA(Adapter):
    name = "oca"
    uses_labels = True
    trained = True
    auto_min_pairs = AUTO_MIN_PAIRS
    needs_labels = True
    label_requirement = ("its losses (classification, influence, prototype cosine) are all label-based; without "
                         "labels an orthogonal layer can only reproduce Procrustes")

    @classmethod
    def default_params(cls) -> dict:
        return {**TRAIN_DEFAULTS, **REFERENCE_TRAINING, "extra_dims": 32, "w_ce": 5.0, "w_influence": 10.0,
                "w_prototype": 5.0, "label_smoothing": 0.1, "device": "auto"}

    def _fit(self, x_old, x_new, labels, seed, progress: ProgressFn) -> FitReport:
        import torch  # only to fit: serving Q is numpy
        from torch.nn import functional

        from adapters import training as tr
        from adapters.networks import OrthogonalLayer

        p = self.params
        cfg = TrainConfig.from_params(p)
        gen = tr.seed_everything(seed)
        device = tr.pick_device(p["device"])
        o, w, self.mu_old, self.mu_new, rot = centred_procrustes(x_old, x_new)  # x @ rot maps new -> old
        width = max(self.d_new, self.d_old + int(p["extra_dims"]))
        split = tr.split_indices(len(o), cfg, gen, tr.label_codes(labels)[1])
        o_t = tr.to_tensor(o, device)
        codes_t, protos, n_classes = tr.label_targets(labels, o_t, split.fit)
        layer = OrthogonalLayer(extend_to_orthogonal(rot.T, width), n_classes).to(device)  # layer computes W x
        w_t = tr.to_tensor(pad_to(w - self.mu_new, width), device)
        with torch.no_grad():
            fit = split.fit.to(device)
            layer.head.weight.copy_(tr.prototypes(layer(w_t[fit]), codes_t[fit], n_classes, unit_rows=True))
            layer.head.bias.zero_()
        mu_old_t = tr.to_tensor(self.mu_old[None, :], device)
        d_old, smoothing = self.d_old, p["label_smoothing"]

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            f = layer(w_t[idx])
            z, y = f[:, :d_old] + mu_old_t, codes_t[idx]
            ce = functional.cross_entropy(layer.head(f), y, label_smoothing=smoothing)
            influence = functional.cross_entropy(functional.normalize(z, dim=1) @ protos.T, y,
                                                 label_smoothing=smoothing)
            return (p["w_ce"] * ce + p["w_influence"] * influence
                    + p["w_prototype"] * tr.prototype_cosine_loss(z, protos, y))

        scorer = tr.retrieval_scorer(lambda idx: layer(w_t[idx])[:, :d_old] + mu_old_t, o_t, codes_t)
        report = tr.train_loop(layer, loss_fn, split, cfg, gen, progress, self.name, scorer)
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
