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


class BoundedAffine(nn.Module):
    """z = W (x - shift) + b whose singular values `project` keeps within sqrt(1 -+ lam) (lambda_orth)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, shift: np.ndarray) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.as_tensor(weight))
        self.bias = nn.Parameter(torch.as_tensor(bias))
        self.register_buffer("shift", torch.as_tensor(shift))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) @ self.weight.T + self.bias

    def project(self, lam: float) -> None:
        """Clip the singular values into [sqrt(max(0, 1 - lam)), sqrt(1 + lam)] (in place): the
        nearest map, in Frobenius norm, whose smaller Gram matrix has every eigenvalue within lam of 1."""
        u, s, vh = torch.linalg.svd(self.weight, full_matrices=False)
        low, high = max(0.0, 1.0 - lam) ** 0.5, (1.0 + lam) ** 0.5
        self.weight.copy_((u * s.clamp(low, high)) @ vh)


def orthogonal_linear(init: np.ndarray) -> nn.Linear:
    """A square bias-free layer kept exactly orthogonal (Cayley map around a stored base), starting at `init`."""
    layer = nn.Linear(init.shape[0], init.shape[0], bias=False)
    parametrizations.orthogonal(layer, orthogonal_map="cayley")
    with torch.no_grad():
        layer.weight = torch.as_tensor(init)  # right-inverse: the base becomes `init`, the offset 0
    return layer


class OrthogonalLayer(nn.Module):
    """h = Q x with Q kept exactly orthogonal (Cayley parametrisation), plus a class head (oca)."""

    def __init__(self, init: np.ndarray, n_classes: int) -> None:
        super().__init__()
        self.linear = orthogonal_linear(init)
        self.head = nn.Linear(init.shape[0], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class BT2Layer(nn.Module):
    """BT²'s basis transformation over a frozen feature f (bt2): an old branch (the reference's widened
    backbone channels and fc3) gives k learned dimensions, an orthogonal map Q_p mixes the scaled
    feature, and Q_old turns the first d_old coordinates into the compatible feature."""

    def __init__(self, width: int, d_old: int, extra: int, scale: float) -> None:
        super().__init__()
        self.extra, self.d_old, self.scale = extra, d_old, scale
        self.widen = nn.Linear(width, d_old)
        self.fc3 = nn.Linear(width + d_old, d_old)
        with torch.no_grad():  # start as a passthrough of f's first k coordinates: relu(f) - relu(-f) = f
            eye = torch.eye(extra, width)
            self.widen.weight[:extra] = -eye
            self.widen.bias[:extra] = 0.0
            self.fc3.weight.zero_()
            self.fc3.bias.zero_()
            self.fc3.weight[:extra, :width] = eye
            self.fc3.weight[:extra, width : width + extra] = -torch.eye(extra)
        shift = np.roll(np.eye(width, dtype=np.float32), extra, axis=1)  # (Q_p f)[i] = f[(i + k) mod width]
        self.q_p = orthogonal_linear(shift)
        self.q_old = orthogonal_linear(np.eye(d_old, dtype=np.float32))

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(compatible feature, the remaining dims) for aligned, centred new features f."""
        branch = self.fc3(torch.relu(torch.cat([f, self.widen(f)], dim=1)))
        merged = torch.cat([nn.functional.normalize(branch[:, : self.extra], dim=1), self.scale * self.q_p(f)], dim=1)
        return self.q_old(merged[:, : self.d_old]), merged[:, self.d_old :]


class LegacyBasisTransformation(nn.Module):
    """The bt2 network of transformations trained before the faithful port (format 1): kept only so
    that stored upgrades keep serving; new fits use BT2Layer."""

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


def load_legacy_bt2(tensors: dict[str, np.ndarray], d_new: int, d_old: int) -> LegacyBasisTransformation:
    """A format-1 bt2 network from its stored tensors (`mu_*` already taken out)."""
    tensors = dict(tensors)
    basis = tensors.pop("basis_matrix")
    n_classes = tensors["head.weight"].shape[0] if "head.weight" in tensors else 0
    net = LegacyBasisTransformation(d_new, d_old, basis.shape[0] - d_old, tensors["mlp.0.weight"].shape[0],
                                    tensors["compat.weight"], n_classes)
    with torch.no_grad():
        net.basis.weight = torch.as_tensor(basis)
    missing = net.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
    unexpected = [k for k in missing.missing_keys if not k.startswith("basis.parametrizations")]
    if unexpected or missing.unexpected_keys:
        raise ValueError(f"bt2 weights do not match: missing {unexpected}, unexpected {missing.unexpected_keys}")
    return net.eval()


class ResidualMap(nn.Module):
    """z = scale * (W x + residual(x)) + bias over centred new vectors x (drift_lowrank, drift_mlp,
    rank_distill). `residual` is a rank-r product U V (zero at start) or a GELU MLP whose output
    layer starts at zero, so every fit starts exactly at its linear map W."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, train_linear: bool, rank: int = 0, hidden: int = 0,
                 seed: int = 0) -> None:
        super().__init__()
        d_old, d_new = weight.shape
        self.weight = nn.Parameter(torch.as_tensor(weight), requires_grad=train_linear)
        self.bias = nn.Parameter(torch.as_tensor(bias))
        self.scale = nn.Parameter(torch.ones(d_old))
        gen = torch.Generator().manual_seed(seed)
        if rank:
            self.down = nn.Parameter(torch.randn(rank, d_new, generator=gen) / d_new**0.5)
            self.up = nn.Parameter(torch.zeros(d_old, rank))
        if hidden:
            self.mlp = nn.Sequential(nn.Linear(d_new, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d_old))
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x @ self.weight.T
        if hasattr(self, "up"):
            z = z + (x @ self.down.T) @ self.up.T
        if hasattr(self, "mlp"):
            z = z + self.mlp(x)
        return self.scale * z + self.bias
