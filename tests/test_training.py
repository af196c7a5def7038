"""The trained methods' machinery: losses, the validation split, the λ bound, numpy serving of torch-trained
layers, and loading transformations stored by earlier versions of a method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from adapters import create, load
from adapters import training as tr
from adapters.train_config import TrainConfig

DATA = Path(__file__).parent / "data" / "wordnet_subset.npz"


@pytest.fixture(scope="module")
def pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(DATA) as f:
        return f["minilm"].astype(np.float32), f["mpnet"].astype(np.float32), f["labels"]


def test_supervised_contrastive_never_pushes_a_same_class_item_away() -> None:
    """Each z matches its class partner's target (cos 1), its own at cos 0.6: SupCon counts the partner
    as a positive (half the loss of InfoNCE, for which the partner is the strongest negative)."""
    targets = torch.tensor([[1.0, 0, 0, 0], [0.6, 0.8, 0, 0], [0, 0, 1.0, 0], [0, 0, 0.6, 0.8]])
    z = targets[[1, 0, 3, 2]]
    codes = torch.tensor([0, 0, 1, 1])
    with_labels = tr.supervised_contrastive(z, targets, codes, tau=0.1)
    without = tr.supervised_contrastive(z, targets, None, tau=0.1)
    assert with_labels < 0.55 * without
    own = torch.nn.functional.cross_entropy(z @ targets.T / 0.1, torch.arange(4))  # InfoNCE, written out
    assert torch.isclose(without, own)


def test_listwise_distillation_is_zero_exactly_when_the_rankings_agree() -> None:
    gen = torch.Generator().manual_seed(0)
    new = torch.randn(16, 8, generator=gen)
    old = torch.randn(16, 8, generator=gen)
    assert tr.listwise_distillation(old, old, new, new, 0.1) > 0.1
    assert tr.listwise_distillation(new, new, new, new, 0.1) == pytest.approx(0.0, abs=1e-6)


def test_validation_holds_out_whole_classes_and_prototypes_come_from_training_rows() -> None:
    codes = np.repeat(np.arange(10), 30)
    split = tr.split_indices(len(codes), TrainConfig(), torch.Generator().manual_seed(1), codes)
    val, fit = split.val.numpy(), split.fit.numpy()
    assert not set(val) & set(fit) and len(val) + len(fit) == len(codes)
    held = set(codes[val[split.unseen.numpy()]])
    assert len(held) == 2 and not held & set(codes[fit])  # 20 % of the classes, wholly in validation
    assert set(codes[val[~split.unseen.numpy()]]) <= set(codes[fit])  # the rest of validation: seen classes
    old = torch.nn.functional.normalize(torch.randn(len(codes), 4), dim=1)
    _, protos, n = tr.label_targets(codes, old, split.fit)
    assert n == 10
    for c in range(10):
        assert (protos[c].abs().sum() == 0) == (c in held)


@pytest.mark.parametrize("lam", [0.0, 0.05])
def test_lambda_orth_returns_maps_that_meet_the_bound(pairs, lam) -> None:
    old, new, labels = pairs
    adapter = create("lambda_orth", lam=lam, max_steps=30, min_steps=30, eval_every=10, lr=5e-3)
    report = adapter.fit(old, new, labels, seed=0)
    for weight in (adapter.weight, adapter.fwd_weight):
        s = np.linalg.svd(weight, compute_uv=False)
        assert s.min() >= np.sqrt(1 - lam) - 1e-4 and s.max() <= np.sqrt(1 + lam) + 1e-4
    deviation = report.notes["gram_deviation"]
    assert deviation["bound"] == lam and max(deviation["backward"], deviation["forward"]) <= lam + 1e-4
    assert adapter.forward(old[:3]).shape == (3, new.shape[1])


def test_residual_maps_serve_in_numpy_exactly_what_torch_trained() -> None:
    from adapters.networks import ResidualMap
    from adapters.residual_maps import ResidualMapAdapter

    gen = torch.Generator().manual_seed(0)
    net = ResidualMap(np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32), np.zeros(5, np.float32),
                      True, rank=3, hidden=11)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    adapter = create("drift_mlp")
    adapter.d_old, adapter.d_new = 5, 7
    adapter.arrays = {k: v.numpy() for k, v in net.state_dict().items()}
    adapter.mu_old, adapter.mu_new = np.zeros(5, np.float32), np.full(7, 0.1, np.float32)
    x = np.random.default_rng(1).normal(size=(9, 7)).astype(np.float32)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    with torch.no_grad():
        expected = net(torch.as_tensor(unit - adapter.mu_new)).numpy()
    assert isinstance(adapter, ResidualMapAdapter)
    np.testing.assert_allclose(adapter.transform(x), expected, rtol=1e-4, atol=1e-5)


def test_bt2_serves_in_numpy_exactly_what_its_torch_layer_computes() -> None:
    from adapters.networks import BT2Layer

    width, d_old, k = 10, 6, 2
    layer = BT2Layer(width, d_old, k, 2.0)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.1 if "parametrizations" in name else 1.0))
    adapter = create("bt2", extra_dims=k)
    adapter.d_old, adapter.d_new = d_old, width
    adapter.rotation = np.eye(width, dtype=np.float32)
    adapter.mu_old, adapter.mu_new = np.zeros(d_old, np.float32), np.zeros(width, np.float32)
    adapter.shape = np.array([k, 2.0], np.float32)
    with torch.no_grad():
        adapter.widen_weight, adapter.widen_bias = layer.widen.weight.numpy(), layer.widen.bias.numpy()
        adapter.fc3_weight, adapter.fc3_bias = layer.fc3.weight.numpy(), layer.fc3.bias.numpy()
        adapter.q_p, adapter.q_old = layer.q_p.weight.numpy(), layer.q_old.weight.numpy()
        x = np.random.default_rng(2).normal(size=(4, width)).astype(np.float32)
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        compat, rest = layer(torch.as_tensor(unit))
    np.testing.assert_allclose(adapter.transform(x), compat.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(adapter.transform_new(x), np.hstack([compat.numpy(), rest.numpy()]),
                               rtol=1e-4, atol=1e-5)


def _write_stored(directory: Path, method: str, params: dict, tensors: dict, d_old: int, d_new: int) -> Path:
    directory.mkdir(parents=True)
    save_file(tensors, directory / "weights.safetensors")
    (directory / "config.json").write_text(json.dumps({"method": method, "d_old": d_old, "d_new": d_new,
                                                       "params": params, "report": None}))
    return directory


def test_a_lambda_orth_stored_by_the_previous_version_still_serves(tmp_path) -> None:
    rng = np.random.default_rng(0)
    t = {"weight": rng.normal(size=(4, 6)).astype(np.float32), "bias": rng.normal(size=4).astype(np.float32),
         "mu_new": rng.normal(size=6).astype(np.float32), "fwd_weight": rng.normal(size=(4, 6)).astype(np.float32),
         "fwd_bias": rng.normal(size=6).astype(np.float32)}
    old_params = {"lam": 0.1, "mu": 10.0, "w_nce": 0.5, "w_influence": 1.0, "tau": 0.05, "forward_alpha": 1.0}
    adapter = load(_write_stored(tmp_path / "lo", "lambda_orth", old_params, t, 4, 6))
    assert adapter.legacy_params == {"w_nce": 0.5, "w_influence": 1.0, "forward_alpha": 1.0}
    x_new, x_old = rng.normal(size=(3, 6)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    unit_new = x_new / np.linalg.norm(x_new, axis=1, keepdims=True)
    unit_old = x_old / np.linalg.norm(x_old, axis=1, keepdims=True)
    expected = (unit_new - t["mu_new"]) @ t["weight"].T + t["bias"]
    np.testing.assert_allclose(adapter.transform(x_new), expected, rtol=1e-5)
    np.testing.assert_allclose(adapter.forward(x_old), unit_old @ t["fwd_weight"] + t["fwd_bias"], rtol=1e-5)


def test_a_bt2_stored_by_the_previous_version_still_serves(tmp_path) -> None:
    from adapters.networks import LegacyBasisTransformation

    d_new, d_old, extra, hidden = 6, 4, 2, 5
    net = LegacyBasisTransformation(d_new, d_old, extra, hidden, np.zeros((d_old, d_new), np.float32), 3)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    state = {k: v.numpy() for k, v in net.state_dict().items() if not k.startswith("basis.parametrizations")}
    state["basis_matrix"] = net.basis.weight.detach().numpy()
    mu_old, mu_new = np.full(d_old, 0.1, np.float32), np.full(d_new, 0.05, np.float32)
    stored = _write_stored(tmp_path / "bt2", "bt2", {"extra_dims": extra, "hidden": hidden, "w_nce": 0.5},
                           {**state, "mu_old": mu_old, "mu_new": mu_new}, d_old, d_new)
    adapter = load(stored)
    x = np.random.default_rng(1).normal(size=(3, d_new)).astype(np.float32)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    with torch.no_grad():
        out = net(torch.as_tensor(unit - mu_new)).numpy()
    np.testing.assert_allclose(adapter.transform(x), out[:, :d_old] + mu_old, rtol=1e-4, atol=1e-5)
