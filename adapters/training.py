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
from dataclasses import dataclass

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


def prototypes(x_old: torch.Tensor, codes: torch.Tensor, n_classes: int, unit_rows: bool = False) -> torch.Tensor:
    """The pseudo-classifier P: per-class means of normalised old features.

    As in the BT² and OCA reference code, the rows are plain means (their norm says how tight the
    class is); `unit_rows` rescales them to unit length (a nearest-prototype classifier's weights).
    """
    sums = torch.zeros(n_classes, x_old.shape[1], device=x_old.device)
    sums.index_add_(0, codes, F.normalize(x_old, dim=1))
    counts = torch.bincount(codes, minlength=n_classes).clamp(min=1).to(sums.dtype)
    means = sums / counts[:, None]
    return F.normalize(means, dim=1) if unit_rows else means


def label_targets(
    labels: np.ndarray | None, old: torch.Tensor, fit_rows: torch.Tensor, unit_rows: bool = False
) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
    """(class codes, pseudo-classifier P, number of classes) for the label losses; Nones without labels.

    P is built from the training rows only: a class held out for validation gets a zero row, so
    nothing of it reaches training (its validation score stays honest)."""
    if labels is None:
        return None, None, 0
    classes, codes = label_codes(labels)
    codes_t = torch.as_tensor(codes, device=old.device)
    rows = fit_rows.to(old.device)
    return codes_t, prototypes(old[rows], codes_t[rows], len(classes), unit_rows), len(classes)


def influence_loss(z: torch.Tensor, protos: torch.Tensor, codes: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """CE(normalize(z) @ P.T / tau, y): z must be classified by the *old* model's class geometry.

    The reference code (BT², OCA) has no temperature: tau = 1 with P the plain class means."""
    return F.cross_entropy(F.normalize(z, dim=1) @ protos.T / tau, codes)


def supervised_contrastive(z: torch.Tensor, target: torch.Tensor, codes: torch.Tensor | None,
                           tau: float) -> torch.Tensor:
    """Cross-model supervised contrastive loss (SupCon, Khosla et al. 2020) from z to the batch's targets.

    For each z_i every target of its class is a positive -- its own pair included -- and only other
    classes are negatives: a same-class item is never pushed away, which is what the label
    objective wants. Without labels every item is its own class and this is InfoNCE.
    """
    logits = F.normalize(z, dim=1) @ F.normalize(target, dim=1).T / tau
    if codes is None:
        return F.cross_entropy(logits, torch.arange(len(z), device=z.device))
    positive = (codes[:, None] == codes[None, :]).to(logits.dtype)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -((positive * log_prob).sum(dim=1) / positive.sum(dim=1)).mean()


def listwise_distillation(z: torch.Tensor, gallery: torch.Tensor, teacher_q: torch.Tensor,
                          teacher_g: torch.Tensor, tau: float) -> torch.Tensor:
    """KL(teacher || student) between in-batch rankings: the mapped query z_i must rank the batch's
    *old* vectors as the new model ranks their *new* vectors (softmax over each row, self excluded).

    Point-wise alignment (cosine to the paired old vector, InfoNCE) rewards finding one's own old
    vector; what a new-model client needs is the new model's ordering of the gallery, and this
    loss asks for exactly that, without labels.
    """
    student = F.normalize(z, dim=1) @ F.normalize(gallery, dim=1).T / tau
    teacher = F.normalize(teacher_q, dim=1) @ F.normalize(teacher_g, dim=1).T / tau
    self_pairs = torch.eye(len(z), dtype=torch.bool, device=z.device)
    student = student.masked_fill(self_pairs, float("-inf"))
    teacher = teacher.masked_fill(self_pairs, float("-inf"))
    log_s = F.log_softmax(student, dim=1).masked_fill(self_pairs, 0.0)
    log_t = F.log_softmax(teacher, dim=1).masked_fill(self_pairs, 0.0)
    return (log_t.exp() * (log_t - log_s)).sum(dim=1).mean()


def prototype_cosine_loss(z: torch.Tensor, protos: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    return cosine_loss(z, protos[codes])


# ---- the loop ---------------------------------------------------------------------------------
LossFn = Callable[[torch.Tensor], torch.Tensor]
"""loss(indices) -> scalar loss on those training rows."""

ScoreFn = Callable[[torch.Tensor, torch.Tensor], list[float]]
"""score(validation indices, unseen-class mask over them) -> higher-is-better quality per part."""


@dataclass
class Split:
    """Training rows, validation rows, and which validation rows belong to classes held out whole."""

    fit: torch.Tensor
    val: torch.Tensor
    unseen: torch.Tensor  # bool, one per validation row


def split_indices(n: int, cfg: TrainConfig, generator: torch.Generator, codes: np.ndarray | None = None) -> Split:
    """A random validation share of the rows; with labels (5+ classes) also `val_class_fraction` of
    the classes held out whole, so early stopping sees what label losses do to categories the map
    never trained on (they lift the classes they see and can hurt new ones -- docs/adapters.md)."""
    perm = torch.randperm(n, generator=generator).numpy()
    held = np.zeros(n, dtype=bool)
    if codes is not None and n >= 40:
        classes = np.unique(codes)
        k = int(round(cfg.val_class_fraction * len(classes)))
        if len(classes) >= 5 and k >= 1:
            chosen = classes[torch.randperm(len(classes), generator=generator).numpy()[:k]]
            held = np.isin(codes, chosen)
    rest = perm[~held[perm]]
    n_val = 0 if n < 40 else min(cfg.val_max, max(8, int(round(cfg.val_fraction * len(rest)))))
    unseen = perm[held[perm]][: cfg.val_max]  # rows of held classes beyond the cap are neither fitted nor scored
    val = np.concatenate([unseen, rest[:n_val]])
    mask = np.zeros(len(val), dtype=bool)
    mask[: len(unseen)] = True
    return Split(torch.as_tensor(rest[n_val:]), torch.as_tensor(val), torch.as_tensor(mask))


def retrieval_scorer(
    queries_of: Callable[[torch.Tensor], torch.Tensor], old: torch.Tensor, codes: torch.Tensor | None
) -> ScoreFn:
    """Validation score = what the adapter is for: new->old retrieval on the validation rows.

    With labels: mAP@R of the mapped validation queries against the validation items' old vectors
    (leave-one-out, same label = relevant), separately on the classes held out whole and on the
    others. Without labels: MRR of finding each item's own old vector. Early stopping on this, not
    on the training loss, is what keeps small pair sets from overfitting (the contrastive and
    influence terms keep falling on training rows long after retrieval on unseen rows has peaked).
    """
    from adapters.metrics import map_at_r, pairing_metrics

    def score(idx: torch.Tensor, unseen: torch.Tensor) -> list[float]:
        with torch.no_grad():
            q = queries_of(idx).cpu().numpy()
        g = old[idx].cpu().numpy()
        if codes is not None:
            labels = codes[idx].cpu().numpy()
            parts = []
            for mask in (unseen.cpu().numpy(), ~unseen.cpu().numpy()):
                if mask.sum() >= 8 and np.bincount(labels[mask]).max() > 1:
                    parts.append(map_at_r(q[mask], g[mask], labels[mask]))
            if parts:
                return parts
        return [pairing_metrics(q, g).mrr]

    return score


def train_loop(
    module: torch.nn.Module,
    loss_fn: LossFn,
    split: Split,
    cfg: TrainConfig,
    generator: torch.Generator,
    progress: ProgressFn,
    method: str,
    score_fn: ScoreFn | None = None,
    constrain: Callable[[], None] | None = None,
) -> FitReport:
    """Adam with cosine decay over the step budget; early stopping on the validation score
    (`score_fn`, higher is better) or, without one, on the validation loss.

    With several validation parts (unseen / seen classes) the score is the worse part relative to
    its value at step 0: a step counts as better only if it is better on both. `constrain`, when
    given, projects the parameters onto the method's feasible set before every evaluation, so every
    state that can be returned satisfies it (lambda_orth's bound)."""
    device = next(module.parameters()).device
    fit_idx, val_idx, unseen = split.fit.to(device), split.val.to(device), split.unseen.to(device)
    bs = max(2, min(cfg.batch_size, len(fit_idx)))
    steps_per_epoch = max(1, math.ceil(len(fit_idx) / bs))
    budget = max(cfg.min_steps, min(cfg.max_steps, cfg.max_epochs * steps_per_epoch))
    # evaluate about four times per epoch on big sets, every `eval_every` steps on small ones
    eval_every = max(cfg.eval_every, steps_per_epoch // 4)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=budget)
    report = FitReport(method=method)
    start_parts: list[float] = []

    def validation_loss() -> float:
        """Lower is better: the negated (relative) score when there is one, else the loss."""
        if constrain is not None:
            with torch.no_grad():
                constrain()
        module.eval()
        if score_fn is not None and len(val_idx) >= 8:
            parts = [float(p) for p in score_fn(val_idx, unseen)]
            if not start_parts:
                start_parts.extend(parts)
            ratios = [p / s for p, s in zip(parts, start_parts, strict=True) if s > 0]
            module.train()
            return -min(ratios) if ratios else -parts[0]
        with torch.no_grad():
            rows = val_idx if len(val_idx) else fit_idx[: min(len(fit_idx), 2048)]
            value = sum(float(loss_fn(rows[i : i + 1024])) * len(rows[i : i + 1024])
                        for i in range(0, len(rows), 1024)) / len(rows)
        module.train()
        return value

    best = validation_loss()
    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    with torch.no_grad():
        initial_train = float(loss_fn(fit_idx[: min(len(fit_idx), 2048)]))
    report.curve.append({"step": 0, "train_loss": initial_train, "val_loss": best})
    report.notes["val_objective"] = ("negated validation retrieval score relative to step 0 (worse part)"
                                     if score_fn else "validation loss")
    report.notes["validation"] = {"rows": len(val_idx), "unseen_class_rows": int(unseen.sum())}
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


def agreement_scorer(queries_of: Callable[[torch.Tensor], torch.Tensor], old: torch.Tensor,
                     new: torch.Tensor, k: int = 10) -> ScoreFn:
    """Validation score without labels for maps meant to rank as the new model does: the share of
    each validation query's k nearest validation items under the new model that its mapped query
    also puts in its top k among their old vectors."""
    from adapters.metrics import neighbour_agreement

    def score(idx: torch.Tensor, unseen: torch.Tensor) -> list[float]:
        with torch.no_grad():
            q = queries_of(idx).cpu().numpy()
        return [neighbour_agreement(q, old[idx].cpu().numpy(), new[idx].cpu().numpy(), k)]

    return score
