"""The interface every compatibility transformation implements, and its persistence.

An adapter is fitted on paired embeddings of the same items under an old and a new encoder and then
maps *new-model queries* into a space where they can be compared with *old-model gallery vectors*
("new/old" retrieval). Some methods also produce a richer representation for new/new search
(`transform_new`) or a forward map for stored old vectors (`forward`); the defaults say "not
provided".

Persistence: tensors go to `weights.safetensors`, everything else (method name, dims,
hyper-parameters, fit report) to `config.json`, so a saved adapter can be inspected without
loading it and loaded without pickle.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from safetensors.numpy import load_file, save_file

from adapters.vectors import as_matrix, check_pairs

ProgressFn = Callable[[float, str], None]
"""progress(fraction in [0, 1], message) -- called during fitting; must be cheap."""


def is_share(value: Any) -> bool:
    """A real number in [0, 1] -- and not a bool, which JSON's `true` would otherwise pass as 1."""
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 <= value <= 1


CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


@dataclass
class FitReport:
    """What fitting did: how long it took and, for trained methods, the curve it followed."""

    method: str
    fit_seconds: float = 0.0
    steps: int = 0
    stopped_early: bool = False
    stayed_at_start: bool = False  # trained, but no step beat the initial state (it returns its start)
    best_val_loss: float | None = None
    # [{"step", "train_loss", "val_loss"}]; val_loss is lower-is-better (see notes["val_objective"])
    curve: list[dict[str, float]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Adapter(ABC):
    """A fitted (or fittable) map from the new model's space to the old model's space."""

    name: ClassVar[str]
    uses_labels: ClassVar[bool] = False  # True: fit() exploits labels when they are given
    needs_labels: ClassVar[bool] = False  # True: fit() refuses pairs without labels (no objective without them)
    needs_old_query: ClassVar[bool] = False  # True: transform() needs the query in both models

    label_requirement: ClassVar[str] = ""  # why, when needs_labels
    trained: ClassVar[bool] = False  # gradient-trained from a closed-form start (may "stay at start")
    # auto offers a trained method only when its fitting folds hold at least this many pairs:
    # below it, the method was measured to stay at (or fall below) its closed-form start
    auto_min_pairs: ClassVar[int] = 0

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = {**self.default_params(), **params}
        unknown = set(params) - set(self.default_params())
        if unknown:
            raise ValueError(f"{self.name}: unknown parameters {sorted(unknown)}")
        self.d_old: int | None = None
        self.d_new: int | None = None
        self.legacy_params: dict[str, Any] = {}  # set by registry.create_stored for older stored configs
        self.report: FitReport | None = None

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {}

    # ---- fitting --------------------------------------------------------------------------------
    def fit(
        self,
        x_old: np.ndarray,
        x_new: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        seed: int = 0,
        progress: ProgressFn | None = None,
    ) -> FitReport:
        """Learn the map from paired rows (`x_old[i]`, `x_new[i]` embed the same item)."""
        x_old, x_new, labels = check_pairs(x_old, x_new, labels)
        if self.needs_labels and labels is None:
            raise ValueError(f"{self.name} needs labels on the training pairs: {self.label_requirement}")
        self.d_old, self.d_new = x_old.shape[1], x_new.shape[1]
        started = time.perf_counter()
        report = self._fit(x_old, x_new, labels if self.uses_labels else None, seed, progress or _quiet)
        report.fit_seconds = time.perf_counter() - started
        self.report = report
        return report

    @abstractmethod
    def _fit(self, x_old: np.ndarray, x_new: np.ndarray, labels: np.ndarray | None, seed: int,
             progress: ProgressFn) -> FitReport: ...

    # ---- using --------------------------------------------------------------------------------
    @abstractmethod
    def transform(self, x_new: np.ndarray, x_old: np.ndarray | None = None) -> np.ndarray:
        """Queries embedded by the new model -> vectors comparable (cosine) with old vectors."""

    def transform_new(self, x_new: np.ndarray) -> np.ndarray:
        """The representation used for new/new search (default: the new embedding itself)."""
        return as_matrix(x_new, "x_new")

    def forward(self, x_old: np.ndarray) -> np.ndarray | None:
        """Old vectors -> the new space, where the method provides one (else None)."""
        return None

    # ---- persistence --------------------------------------------------------------------------
    @abstractmethod
    def tensors(self) -> dict[str, np.ndarray]:
        """Every learned array, for safetensors."""

    @abstractmethod
    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None: ...

    def restore_config(self, config: dict[str, Any]) -> None:
        """Rebuild whatever `config()` added beyond the common fields (before tensors are loaded)."""
        return None

    def config(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "d_old": self.d_old,
            "d_new": self.d_new,
            "params": self.params,
            "report": self.report.as_dict() if self.report else None,
        }

    def save(self, directory: Path | str) -> Path:
        """Write config.json + weights.safetensors into `directory` (created if needed)."""
        if self.d_old is None:
            raise RuntimeError(f"{self.name}: fit before saving")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v) for k, v in self.tensors().items()}, directory / WEIGHTS_FILE)
        (directory / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2, default=_json_default))
        return directory

    def _require_fitted(self) -> None:
        if self.d_old is None:
            raise RuntimeError(f"{self.name}: call fit() or load() first")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _quiet(_fraction: float, _message: str) -> None:
    return None


def restore_common(adapter: Adapter, config: dict[str, Any], directory: Path) -> Adapter:
    adapter.d_old, adapter.d_new = config["d_old"], config["d_new"]
    if config.get("report"):
        adapter.report = FitReport(**config["report"])
    adapter.load_tensors(load_file(directory / WEIGHTS_FILE))
    return adapter
