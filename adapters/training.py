"""Shared machinery for the gradient-trained adapters: device, seeding, losses, the training loop.

The loop is sized by the data, not by a fixed epoch count: mini-batches of `batch_size`, a
validation split carved from the training pairs (10 %, at most 2,000 rows), evaluation every
`eval_every` steps (about four times per epoch on large sets), early stopping after `patience`
evaluations without improvement, and a step budget that grows with the number of pairs
(`max_epochs` passes, capped by `max_steps`). The best parameters seen on the validation split
are restored at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from adapters.base import FitReport, ProgressFn
from adapters.train_config import TRAIN_DEFAULTS, TrainConfig  # noqa: F401  (re-exported)


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def label_codes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels of any type -> (classes, int codes)."""
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    return classes, codes.astype(np.int64)


# ---- losses -----------------------------------------------------------------------------------
def cosine_loss(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(z_i, target_i)."""
    return (1.0 - F.cosine_similarity(z, target, dim=1)).mean()


def info_nce(z: torch.Tensor, target: torch.Tensor, tau: float) -> torch.Tensor:
    """Contrastive alignment: z_i must be closer to target_i than to the batch's other targets.

    The label-free counterpart of the influence loss: it shapes the ranking, not only the angle
    to the paired vector.
    """
    logits = F.normalize(z, dim=1) @ F.normalize(target, dim=1).T / tau
    return F.cross_entropy(logits, torch.arange(len(z), device=z.device))


def prototypes(x_old: torch.Tensor, codes: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The pseudo-classifier P: per-class means of normalised old features, row-normalised."""
    sums = torch.zeros(n_classes, x_old.shape[1], device=x_old.device)
    sums.index_add_(0, codes, F.normalize(x_old, dim=1))
    return F.normalize(sums, dim=1)


def label_targets(
    labels: np.ndarray | None, old: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
    """(class codes, pseudo-classifier P, number of classes) for the label losses; Nones without labels."""
    if labels is None:
        return None, None, 0
    classes, codes = label_codes(labels)
    codes_t = torch.as_tensor(codes, device=old.device)
    return codes_t, prototypes(old, codes_t, len(classes)), len(classes)


def influence_loss(z: torch.Tensor, protos: torch.Tensor, codes: torch.Tensor, tau: float) -> torch.Tensor:
    """CE(normalize(z) @ P.T / tau, y): z must be classified by the *old* model's class geometry."""
    return F.cross_entropy(F.normalize(z, dim=1) @ protos.T / tau, codes)


def prototype_cosine_loss(z: torch.Tensor, protos: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    return cosine_loss(z, protos[codes])


# ---- the loop ---------------------------------------------------------------------------------
LossFn = Callable[[torch.Tensor], torch.Tensor]
"""loss(indices) -> scalar loss on those training rows."""

ScoreFn = Callable[[torch.Tensor], float]
"""score(validation indices) -> higher-is-better quality of the current parameters."""


def retrieval_scorer(
    queries_of: Callable[[torch.Tensor], torch.Tensor], old: torch.Tensor, codes: torch.Tensor | None
) -> ScoreFn:
    """Validation score = what the adapter is for: new->old retrieval on the validation rows.

    With labels: mAP@R of the mapped validation queries against the validation items' old vectors
    (leave-one-out, same label = relevant). Without labels: MRR of finding each item's own old
    vector. Early stopping on this, not on the training loss, is what keeps small pair sets from
    overfitting (the contrastive and influence terms keep falling on training rows long after
    retrieval on unseen rows has peaked).
    """
    from adapters.metrics import pairing_metrics, retrieval_metrics

    def score(idx: torch.Tensor) -> float:
        with torch.no_grad():
            q = queries_of(idx).cpu().numpy()
        g = old[idx].cpu().numpy()
        if codes is not None:
            labels = codes[idx].cpu().numpy()
            if np.bincount(labels).max() > 1:
                return retrieval_metrics(q, g, labels).mAP_at_R
        return pairing_metrics(q, g).mrr

    return score


def split_indices(n: int, cfg: TrainConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=generator)
    n_val = 0 if n < 40 else min(cfg.val_max, max(8, int(round(cfg.val_fraction * n))))
    return perm[n_val:], perm[:n_val]


def train_loop(
    module: torch.nn.Module,
    loss_fn: LossFn,
    n: int,
    cfg: TrainConfig,
    generator: torch.Generator,
    progress: ProgressFn,
    method: str,
    score_fn: ScoreFn | None = None,
) -> FitReport:
    """Adam with cosine decay over the step budget; early stopping on the validation score
    (`score_fn`, higher is better) or, without one, on the validation loss."""
    fit_idx, val_idx = split_indices(n, cfg, generator)
    device = next(module.parameters()).device
    fit_idx, val_idx = fit_idx.to(device), val_idx.to(device)
    bs = max(2, min(cfg.batch_size, len(fit_idx)))
    steps_per_epoch = max(1, math.ceil(len(fit_idx) / bs))
    budget = max(cfg.min_steps, min(cfg.max_steps, cfg.max_epochs * steps_per_epoch))
    # evaluate about four times per epoch on big sets, every `eval_every` steps on small ones
    eval_every = max(cfg.eval_every, steps_per_epoch // 4)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=budget)
    report = FitReport(method=method)

    def validation_loss() -> float:
        """Lower is better: the negated score when there is one, else the loss."""
        module.eval()
        if score_fn is not None and len(val_idx) >= 8:
            value = -float(score_fn(val_idx))
            module.train()
            return value
        with torch.no_grad():
            if len(val_idx) == 0:
                value = float(loss_fn(fit_idx[: min(len(fit_idx), 2048)]))
            else:
                parts = [float(loss_fn(val_idx[i : i + 1024])) * len(val_idx[i : i + 1024])
                         for i in range(0, len(val_idx), 1024)]
                value = sum(parts) / len(val_idx)
        module.train()
        return value

    best = validation_loss()
    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    with torch.no_grad():
        initial_train = float(loss_fn(fit_idx[: min(len(fit_idx), 2048)]))
    report.curve.append({"step": 0, "train_loss": initial_train, "val_loss": best})
    report.notes["val_objective"] = "negated validation retrieval score" if score_fn else "validation loss"
    bad_evals = 0
    running, running_n = 0.0, 0
    step = best_step = 0
    module.train()
    while step < budget:
        order = fit_idx[torch.randperm(len(fit_idx), generator=generator).to(device)]
        for start in range(0, len(order), bs):
            batch = order[start : start + bs]
            if len(batch) < 2:
                continue
            loss = loss_fn(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            running += float(loss.detach())
            running_n += 1
            if step % eval_every == 0 or step == budget:
                val = validation_loss()
                report.curve.append({"step": step, "train_loss": running / running_n, "val_loss": val})
                running, running_n = 0.0, 0
                if val < best - 1e-6:
                    best, bad_evals, best_step = val, 0, step
                    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                else:
                    bad_evals += 1
                progress(min(1.0, step / budget), f"{method}: step {step}/{budget}, val loss {val:.4f}")
                if bad_evals >= cfg.patience:
                    report.stopped_early = True
                    break
            if step >= budget:
                break
        if report.stopped_early:
            break
    module.load_state_dict(best_state)
    report.steps = step
    report.best_val_loss = best
    # No step improved on the initial state: the method returns its initialisation (e.g. the
    # Procrustes start) -- say so rather than pass it off as this method's own result.
    report.stayed_at_start = best_step == 0
    progress(1.0, f"{method}: done after {step} steps")
    return report


def to_tensor(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=device)


def run_batched(fn: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray, device: torch.device,
                chunk: int = 8192) -> np.ndarray:
    """Apply a torch function to rows of x in chunks, without gradients; return float32 numpy."""
    outs = []
    with torch.no_grad():
        for start in range(0, len(x), chunk):
            outs.append(fn(to_tensor(x[start : start + chunk], device)).cpu().numpy())
    return np.concatenate(outs).astype(np.float32) if outs else np.empty((0, 0), np.float32)
