"""BT²: Backward-compatible Training with Basis Transformation (after Zhou et al., ICCV 2023;
reference code YifeiZhou02/BT-2 and the BT² model and trainer in z3n0e/OCA), as a post-hoc layer on
the frozen new encoder.

Reference (ResNet_BT2): the backbone is widened by d_old channels; `old_feature = fc3(relu(F))` reads
all of them; the new feature f is the first d_new channels. With k extra dimensions and scale C:

    merged = [normalize(old_feature[:k]) ; Q_p(C · f)]            (k + d_new dims, Q_p orthogonal)
    compatible = Q_old(merged[:d_old])                             (Q_old orthogonal; vs old vectors)
    embedding  = [compatible ; merged[d_old:]]                     (d_new + k dims, for new/new)
Loss (configs/cifar100_transfer.yaml: lambda_1 1, lambda_2 10, lambda_3 5):
    CE(classifier(f), y) + 10 · CE(normalize(compatible) @ P^T, y) + 5 · (1 - cos(o, compatible))
  + 1 · (1 - cos(phi_new, f))
with P the plain per-class means of the normalised old features (no temperature), Adam lr 1e-3,
weight decay 3.05e-5, cosine schedule, batch 128, k = 32, C = 2. Only k dimensions are added and
no information of f is lost: merged holds all of Q_p f.

What the frozen-encoder setting forces:
- f is the frozen new vector itself, so `1 - cos(phi_new, f)` is 0 and the classifier on f trains
  only its own weights: both terms are constant for the layer and are left out. What remains:
  10 · influence + 5 · alignment to the paired old vector (labels optional: without them, alignment).
- The widened channels have no backbone to come from: `widen` (a linear layer over f) produces
  them, and fc3 reads relu([f ; widen(f)]) as in the reference.
- Start: f is expressed in the centred Procrustes basis (f = pad(x - mu_new) · R, D = max(d_new,
  d_old) dims; an isometry, so nothing is lost), Q_p starts as the cyclic shift by k, Q_old as the
  identity, and the old branch as a passthrough of f's first k coordinates (widen = -I and fc3 =
  [I, -I] on them: relu(f) - relu(-f) = f). At step 0 the compatible feature is then the Procrustes
  map with its first k coordinates rescaled to unit norm (the reference normalises them) -- near
  Procrustes, not equal: with d_old = 64 and k = 32, blanking them instead (fc3 at zero) started at
  .116 / .016 top-1 / mAP@R on static64 -> minilm against Procrustes' .219 / .043. From scratch
  the reference has no closed-form start to keep.
- Centring, as for the other methods (e5's shared direction).
Serving is numpy (the trained matrices are materialised); torch only trains.
"""

from __future__ import annotations

import numpy as np

from adapters.base import Adapter, FitReport, ProgressFn
from adapters.methods.procrustes import centred_procrustes, pad_to
from adapters.registry import register_method
from adapters.train_config import AUTO_MIN_PAIRS, TRAIN_DEFAULTS, TrainConfig
from adapters.vectors import as_matrix, normalize

REFERENCE_TRAINING = {"lr": 1e-3, "weight_decay": 3.0517578125e-05, "batch_size": 128}


@register_method(candidate=True)
class BT2(Adapter):
    name = "bt2"
    uses_labels = True
    trained = True
    auto_min_pairs = AUTO_MIN_PAIRS
    _legacy = None  # a format-1 network, when one was loaded

    @classmethod
    def default_params(cls) -> dict:
        return {**TRAIN_DEFAULTS, **REFERENCE_TRAINING, "extra_dims": 32, "scale": 2.0, "w_influence": 10.0,
                "w_old": 5.0, "device": "auto"}

    def _fit(self, x_old, x_new, labels, seed, progress: ProgressFn) -> FitReport:
        import torch  # only to fit: serving the materialised layer is numpy
        from torch.nn import functional

        from adapters import training as tr
        from adapters.networks import BT2Layer

        p = self.params
        k = int(p["extra_dims"])
        if not 1 <= k <= self.d_old:
            raise ValueError(f"bt2: extra_dims must be between 1 and d_old ({self.d_old}), got {k}")
        cfg = TrainConfig.from_params(p)
        gen = tr.seed_everything(seed)
        device = tr.pick_device(p["device"])
        o, w, self.mu_old, self.mu_new, self.rotation = centred_procrustes(x_old, x_new)
        width = self.rotation.shape[0]
        split = tr.split_indices(len(o), cfg, gen, None if labels is None else tr.label_codes(labels)[1])
        o_t = tr.to_tensor(o, device)
        codes_t, protos, _ = tr.label_targets(labels, o_t, split.fit)
        f_t = tr.to_tensor(self._aligned(w), device)
        mu_old_t = tr.to_tensor(self.mu_old[None, :], device)
        layer = BT2Layer(width, self.d_old, k, float(p["scale"])).to(device)

        def compatible(idx: torch.Tensor) -> torch.Tensor:
            return layer(f_t[idx])[0] + mu_old_t

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            z = compatible(idx)
            loss = p["w_old"] * tr.cosine_loss(z, o_t[idx])
            if protos is not None:
                logits = functional.normalize(z, dim=1) @ protos.T
                loss = loss + p["w_influence"] * functional.cross_entropy(logits, codes_t[idx])
            return loss

        scorer = tr.retrieval_scorer(compatible, o_t, codes_t)
        report = tr.train_loop(layer, loss_fn, split, cfg, gen, progress, self.name, scorer)
        with torch.no_grad():
            self.widen_weight = layer.widen.weight.detach().cpu().numpy()
            self.widen_bias = layer.widen.bias.detach().cpu().numpy()
            self.fc3_weight = layer.fc3.weight.detach().cpu().numpy()
            self.fc3_bias = layer.fc3.bias.detach().cpu().numpy()
            self.q_p = layer.q_p.weight.detach().cpu().numpy()
            self.q_old = layer.q_old.weight.detach().cpu().numpy()
        self.shape = np.array([k, float(p["scale"])], dtype=np.float32)
        report.notes["output_dims"] = width + k
        return report

    def _aligned(self, w_unit: np.ndarray) -> np.ndarray:
        """Normalised new vectors -> centred and expressed in the Procrustes basis (an isometry)."""
        return pad_to(w_unit - self.mu_new, self.rotation.shape[0]) @ self.rotation

    def _parts(self, x_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._require_fitted()
        if self._legacy is not None:  # format 1 (before the faithful port): its torch network
            import torch

            from adapters.training import run_batched

            out = run_batched(self._legacy, normalize(as_matrix(x_new, "x_new")) - self.mu_new, torch.device("cpu"))
            return out[:, : self.d_old], out[:, self.d_old :]
        k, scale = int(self.shape[0]), float(self.shape[1])
        f = self._aligned(normalize(as_matrix(x_new, "x_new")))
        widened = f @ self.widen_weight.T + self.widen_bias
        branch = np.maximum(np.hstack([f, widened]), 0.0) @ self.fc3_weight.T + self.fc3_bias
        merged = np.hstack([normalize(branch[:, :k]), scale * (f @ self.q_p.T)])
        return merged[:, : self.d_old] @ self.q_old.T, merged[:, self.d_old :]

    def transform(self, x_new: np.ndarray, x_old: np.ndarray | None = None) -> np.ndarray:
        return self._parts(x_new)[0] + self.mu_old

    def transform_new(self, x_new: np.ndarray) -> np.ndarray:
        return np.hstack(self._parts(x_new))

    def tensors(self) -> dict[str, np.ndarray]:
        return {"rotation": self.rotation, "mu_old": self.mu_old, "mu_new": self.mu_new, "shape": self.shape,
                "widen_weight": self.widen_weight, "widen_bias": self.widen_bias, "fc3_weight": self.fc3_weight,
                "fc3_bias": self.fc3_bias, "q_p": self.q_p, "q_old": self.q_old}

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        tensors = dict(tensors)
        self.mu_old, self.mu_new = tensors.pop("mu_old"), tensors.pop("mu_new")
        if "compat.weight" in tensors:  # stored by the bt2 of format 1: keep serving it as it was trained
            from adapters.networks import load_legacy_bt2

            self._legacy = load_legacy_bt2(tensors, self.d_new, self.d_old)
            return
        for key, value in tensors.items():
            setattr(self, key, value)
