"""The shared body of the residual maps trained on many pairs (drift_lowrank, drift_mlp, rank_distill).

    z = scale ⊙ (W (x - mu_new) + residual(x - mu_new)) + bias        x = L2-normalised new vector

W starts at a closed-form map (Procrustes or the adjoint), the residual at zero (a low-rank product
or a small GELU MLP), the diagonal `scale` at 1 and the bias at mu_old: every fit starts exactly at
its closed-form map and moves only as far as validation allows. A subclass says which start, which
residual and which loss. Serving is numpy over the stored arrays (no torch), so a query pays one or
two small matrix products.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from adapters.base import Adapter, FitReport, ProgressFn
from adapters.train_config import AUTO_MIN_PAIRS, TRAIN_DEFAULTS, TrainConfig
from adapters.vectors import as_matrix, normalize

# Many pairs, cheap steps: large batches and a step budget that still ends on 100k pairs.
RESIDUAL_TRAINING = {**TRAIN_DEFAULTS, "batch_size": 512, "max_epochs": 40, "max_steps": 1_500, "min_steps": 100,
                     "eval_every": 25, "patience": 6}


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """torch's GELU(approximate="tanh"), so numpy serving equals the trained network."""
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))


class ResidualMapAdapter(Adapter):
    """Fit loop and numpy serving for a ResidualMap; subclasses give the start, the residual and the loss."""

    train_linear = False  # whether W itself trains (else only the residual, scale and bias)
    trained = True
    auto_min_pairs = AUTO_MIN_PAIRS

    @classmethod
    def default_params(cls) -> dict:
        return {**RESIDUAL_TRAINING, "rank": 0, "hidden": 0, "device": "auto"}

    @abstractmethod
    def start(self, o: np.ndarray, w: np.ndarray, labels: np.ndarray | None, seed: int) -> np.ndarray:
        """The linear start W (d_old x d_new) for centred, normalised inputs."""

    @abstractmethod
    def make_loss(self, net: Any, o_t: Any, w_t: Any, codes_t: Any) -> Any:
        """loss(indices) for the network on the training rows."""

    def make_scorer(self, net: Any, o_t: Any, w_t: Any, codes_t: Any) -> Any:
        from adapters import training as tr

        return tr.retrieval_scorer(lambda idx: net(w_t[idx]), o_t, codes_t)

    def _fit(self, x_old, x_new, labels, seed, progress: ProgressFn) -> FitReport:

        from adapters import training as tr
        from adapters.networks import ResidualMap

        p = self.params
        cfg = TrainConfig.from_params(p)
        gen = tr.seed_everything(seed)
        device = tr.pick_device(p["device"])
        o, w = normalize(x_old), normalize(x_new)
        self.mu_old, self.mu_new = o.mean(axis=0), w.mean(axis=0)
        weight = self.start(o - self.mu_old, w - self.mu_new, labels, seed)
        net = ResidualMap(weight, self.mu_old, self.train_linear, int(p["rank"]), int(p["hidden"]), seed).to(device)
        split = tr.split_indices(len(o), cfg, gen, None if labels is None else tr.label_codes(labels)[1])
        o_t, w_t = tr.to_tensor(o, device), tr.to_tensor(w - self.mu_new, device)
        codes_t, _, _ = tr.label_targets(labels, o_t, split.fit)
        report = tr.train_loop(net, self.make_loss(net, o_t, w_t, codes_t), split, cfg, gen, progress, self.name,
                               self.make_scorer(net, o_t, w_t, codes_t))
        self.arrays = {name: value.detach().cpu().numpy() for name, value in net.state_dict().items()}
        return report

    def transform(self, x_new: np.ndarray, x_old: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        a = self.arrays
        x = normalize(as_matrix(x_new, "x_new")) - self.mu_new
        z = x @ a["weight"].T
        if "up" in a:
            z = z + (x @ a["down"].T) @ a["up"].T
        if "mlp.0.weight" in a:
            z = z + gelu_tanh(x @ a["mlp.0.weight"].T + a["mlp.0.bias"]) @ a["mlp.2.weight"].T + a["mlp.2.bias"]
        return a["scale"] * z + a["bias"]

    def tensors(self) -> dict[str, np.ndarray]:
        return {**self.arrays, "mu_old": self.mu_old, "mu_new": self.mu_new}

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        tensors = dict(tensors)
        self.mu_old, self.mu_new = tensors.pop("mu_old"), tensors.pop("mu_new")
        self.arrays = tensors
