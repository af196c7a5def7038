"""BT²: Backward-compatible Training with Basis Transformation (after Zhou et al., ICCV 2023;
reference code YifeiZhou02/BT-2), as a post-hoc layer on the frozen new encoder.

Published form: the new backbone's feature f is expanded with a compatible branch and k extra
dimensions, and orthogonal basis transformations mix them so that the first d_old coordinates are
compatible with the old model while no information of f is lost. Post-hoc form used here:

    c(x) = A x' + MLP(x')           compatible branch, x' = x_new - mu_new; A starts at Procrustes
    e(x) = E x'                     k extra dimensions
    o(x) = B · [c(x); e(x)]         B ∈ O(d_old + k): the learned basis transformation
    new/old: z = o(x)[:d_old] + mu_old
    new/new: o(x) (d_old + k dims)
    reconstruction: x̂ = R o(x)      a linear decoder back to the new feature

Losses (o = normalised old vector of the same item; weights as published):
    5 * (1 - cos(z, o)) + 1 * (1 - cos(x̂, x_new)) + w_nce * InfoNCE(z, o; tau)
    with labels: + CE(classifier(o(x)), y) + 10 * CE(norm(z) P^T / tau, y), scaled by label_weight
The reconstruction term is the post-hoc meaning of "keep the new feature recoverable": o(x) must
still carry the new model's information in d_old + k dimensions. Defaults k = 32 (published),
Adam lr 1e-3 with cosine decay (published), MLP hidden width 512 with its output initialised to 0
so training starts from the Procrustes map. Deviation: centring, as for the other methods.
"""

from __future__ import annotations

import numpy as np

from adapters.base import Adapter, FitReport, ProgressFn
from adapters.methods.procrustes import centred_procrustes
from adapters.registry import register_method
from adapters.train_config import TRAIN_DEFAULTS, TrainConfig
from adapters.vectors import as_matrix, normalize


@register_method(candidate=True)
class BT2(Adapter):
    name = "bt2"
    uses_labels = True

    @classmethod
    def default_params(cls) -> dict:
        return {**TRAIN_DEFAULTS, "extra_dims": 32, "hidden": 512, "w_nce": 0.5, "tau": 0.05,
                "label_weight": 1.0, "device": "auto"}

    def _fit(self, x_old, x_new, labels, seed, progress: ProgressFn) -> FitReport:
        import torch  # bt2 runs a network: torch to fit it and to serve it, loaded when first needed
        from torch import nn

        from adapters.networks import BasisTransformation
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
        o, w, self.mu_old, self.mu_new, rot = centred_procrustes(x_old, x_new)
        a_init = rot[: self.d_new, : self.d_old].T.copy()
        o_t = to_tensor(o, device)
        w_t = to_tensor(w - self.mu_new, device)
        w_raw = to_tensor(w, device)
        mu_old_t = to_tensor(self.mu_old[None, :], device)
        codes_t, protos, n_classes = label_targets(labels, o_t)
        net = BasisTransformation(self.d_new, self.d_old, int(p["extra_dims"]), int(p["hidden"]), a_init,
                                   n_classes).to(device)
        d_old = self.d_old

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            out = net(w_t[idx])
            z, target = out[:, :d_old] + mu_old_t, o_t[idx]
            loss = 5 * cosine_loss(z, target) + cosine_loss(net.decoder(out), w_raw[idx])
            loss = loss + p["w_nce"] * info_nce(z, target, p["tau"])
            if protos is not None:
                y = codes_t[idx]
                supervised = nn.functional.cross_entropy(net.head(out), y) + 10 * influence_loss(z, protos, y, p["tau"])
                loss = loss + p["label_weight"] * supervised
            return loss

        scorer = retrieval_scorer(lambda idx: net(w_t[idx])[:, :d_old] + mu_old_t, o_t, codes_t)
        report = train_loop(net, loss_fn, len(o), TrainConfig.from_params(p), gen, progress, self.name, scorer)
        net.eval()
        self._net, self._device = net.cpu(), torch.device("cpu")
        report.notes["output_dims"] = self.d_old + int(p["extra_dims"])
        return report

    def _out(self, x_new: np.ndarray) -> np.ndarray:
        from adapters.training import run_batched

        w = normalize(as_matrix(x_new, "x_new")) - self.mu_new
        return run_batched(self._net, w, self._device)

    def transform(self, x_new: np.ndarray, x_old: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        return self._out(x_new)[:, : self.d_old] + self.mu_old

    def transform_new(self, x_new: np.ndarray) -> np.ndarray:
        self._require_fitted()
        return self._out(x_new)

    def tensors(self) -> dict[str, np.ndarray]:
        # Store the orthogonal basis as its materialised matrix: the parametrisation's internal
        # tensors are an implementation detail of torch.
        state = {k: v.detach().cpu().numpy() for k, v in self._net.state_dict().items()
                 if not k.startswith("basis.parametrizations")}
        state["basis_matrix"] = self._net.basis.weight.detach().cpu().numpy()
        return {**state, "mu_old": self.mu_old, "mu_new": self.mu_new}

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        import torch

        from adapters.networks import BasisTransformation

        self.mu_old, self.mu_new = tensors.pop("mu_old"), tensors.pop("mu_new")
        basis = tensors.pop("basis_matrix")
        n_classes = tensors["head.weight"].shape[0] if "head.weight" in tensors else 0
        extra = basis.shape[0] - self.d_old
        net = BasisTransformation(self.d_new, self.d_old, extra, tensors["mlp.0.weight"].shape[0],
                                   tensors["compat.weight"], n_classes)
        with torch.no_grad():
            net.basis.weight = torch.as_tensor(basis)
        missing = net.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
        unexpected = [k for k in missing.missing_keys if not k.startswith("basis.parametrizations")]
        if unexpected or missing.unexpected_keys:
            raise ValueError(f"bt2 weights do not match: missing {unexpected}, unexpected {missing.unexpected_keys}")
        net.eval()
        self._net, self._device = net, torch.device("cpu")
