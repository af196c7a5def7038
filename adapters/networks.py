"""The torch modules the gradient-trained methods optimise (lambda_orth, oca, bt2).

Here, not in the method modules, so that registering a method (every process does it at import)
never imports torch: a method imports this module only to fit, or to load a network it must run
(bt2). Serving plain galleries, and adapters whose maps are matrices, then never loads torch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrizations


def gram_deviation(weight: torch.Tensor) -> torch.Tensor:
    """RMS deviation of the smaller Gram matrix of `weight` from the identity (lambda_orth)."""
    gram = weight @ weight.T if weight.shape[0] <= weight.shape[1] else weight.T @ weight
    eye = torch.eye(gram.shape[0], device=weight.device)
    return torch.linalg.norm(gram - eye) / gram.shape[0] ** 0.5


class AffineMap(nn.Module):
    """z = W (x - mu_new) + b (lambda_orth)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, mu_new: np.ndarray) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.as_tensor(weight))
        self.bias = nn.Parameter(torch.as_tensor(bias))
        self.register_buffer("mu_new", torch.as_tensor(mu_new))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mu_new) @ self.weight.T + self.bias


class OrthogonalLayer(nn.Module):
    """h = Q x with Q kept exactly orthogonal (Cayley parametrisation), plus a class head (oca)."""

    def __init__(self, init: np.ndarray, n_classes: int) -> None:
        super().__init__()
        width = init.shape[0]
        self.linear = nn.Linear(width, width, bias=False)
        parametrizations.orthogonal(self.linear, orthogonal_map="cayley")
        with torch.no_grad():
            self.linear.weight = torch.as_tensor(init)  # right-inverse: starts exactly at `init`
        self.head = nn.Linear(width, n_classes) if n_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class BasisTransformation(nn.Module):
    """BT²'s map: a compatible part (linear + residual MLP) and extra dims, under an orthogonal basis."""

    def __init__(self, d_new: int, d_old: int, extra: int, hidden: int, a_init: np.ndarray, n_classes: int):
        super().__init__()
        self.compat = nn.Linear(d_new, d_old, bias=False)
        with torch.no_grad():
            self.compat.weight.copy_(torch.as_tensor(a_init))
        self.mlp = nn.Sequential(nn.Linear(d_new, hidden), nn.GELU(), nn.Linear(hidden, d_old))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)
        self.extra = nn.Linear(d_new, extra, bias=False)
        self.basis = nn.Linear(d_old + extra, d_old + extra, bias=False)
        parametrizations.orthogonal(self.basis, orthogonal_map="cayley")
        with torch.no_grad():
            self.basis.weight = torch.eye(d_old + extra)
        self.decoder = nn.Linear(d_old + extra, d_new)
        self.head = nn.Linear(d_old + extra, n_classes) if n_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basis(torch.cat([self.compat(x) + self.mlp(x), self.extra(x)], dim=1))
