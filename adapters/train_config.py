"""How long and how a gradient-trained adapter trains: the settings, without torch.

Kept apart from `adapters/training.py` (the torch loop) so that a method's defaults can be read --
the registry, the API's method list, the service at start-up -- without importing torch, which
costs about 2 s and 190 MB of every process that loads it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    max_epochs: int = 60
    max_steps: int = 4_000
    min_steps: int = 200
    eval_every: int = 25
    patience: int = 6
    val_fraction: float = 0.1
    val_max: int = 2_000
    val_class_fraction: float = 0.2  # with labels: share of classes held out whole for validation

    @classmethod
    def from_params(cls, params: dict) -> TrainConfig:
        return cls(**{k: params[k] for k in cls.__dataclass_fields__ if k in params})


# `auto` offers the trained methods only when the pairs it fits each candidate on number at least
# this many (Adapter.auto_min_pairs). On ~1.4k fitting pairs every trained method stayed at its
# closed-form start, or moved and lost on held-out pairs, on WordNet and on Debian
# (docs/adapters.md "When trained methods are offered"); fitting them there cost most of auto's time.
AUTO_MIN_PAIRS = 5_000

TRAIN_DEFAULTS = {k: v.default for k, v in TrainConfig.__dataclass_fields__.items()}
