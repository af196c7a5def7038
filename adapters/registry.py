"""The method registry: every adapter method registers itself here, and everything else reads it.

A method module decorates its class with `@register_method(...)`, saying what role it plays:
- `candidate`: `auto` fits it out-of-fold and may choose it;
- `baseline`: a closed-form map every other candidate must improve on (auto's ranking reference);
- servable: derived from the class -- a method that needs the query in both models (slerp) cannot
  serve plain new-model queries, so the service does not offer it for upgrades.
`auto`'s candidates, the service's list of trainable methods, the CLI and the tests all derive
from this one table, so a new method is one new module in `adapters/methods/` (plus its line in
`adapters/methods/__init__.py`, which imports every method so each registers itself).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from adapters.base import CONFIG_FILE, Adapter, restore_common

A = TypeVar("A", bound=type[Adapter])


@dataclass(frozen=True)
class MethodSpec:
    """One registered method: its class and the roles it plays."""

    name: str
    cls: type[Adapter]
    candidate: bool
    baseline: bool

    @property
    def defaults(self) -> dict[str, Any]:
        return self.cls.default_params()

    @property
    def servable(self) -> bool:
        """Whether it maps plain new-model queries (what a serving upgrade needs)."""
        return not self.cls.needs_old_query


METHODS: dict[str, MethodSpec] = {}


def register_method(*, candidate: bool = False, baseline: bool = False) -> Callable[[A], A]:
    """Class decorator: add the method to the registry under its `name` (once)."""

    def register(cls: A) -> A:
        name = cls.name
        if name in METHODS and METHODS[name].cls is not cls:
            raise ValueError(f"method {name!r} is registered twice ({METHODS[name].cls.__name__}, {cls.__name__})")
        METHODS[name] = MethodSpec(name, cls, candidate=candidate, baseline=baseline)
        return cls

    return register


def candidates() -> list[str]:
    """Methods `auto` chooses among, in registration order."""
    return [name for name, spec in METHODS.items() if spec.candidate]


def baselines() -> list[str]:
    """The closed-form baselines every other candidate must beat."""
    return [name for name, spec in METHODS.items() if spec.baseline]


def servable() -> list[str]:
    """Methods an upgrade can be trained with (sorted)."""
    return sorted(name for name, spec in METHODS.items() if spec.servable)


def create(name: str, **params: Any) -> Adapter:
    try:
        spec = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None
    return spec.cls(**params)


def create_stored(name: str, params: dict[str, Any]) -> Adapter:
    """An adapter for loading a stored one: parameters a newer version of the method no longer
    takes are set aside in `legacy_params` (they shaped the fit; the stored arrays are what serves)."""
    known = create(name).params
    adapter = create(name, **{k: v for k, v in params.items() if k in known})
    adapter.legacy_params = {k: v for k, v in params.items() if k not in known}
    return adapter


def load(directory: Path | str) -> Adapter:
    """Load an adapter written by `Adapter.save` (a selection method restores its chosen map too)."""
    directory = Path(directory)
    config = json.loads((directory / CONFIG_FILE).read_text())
    adapter = create_stored(config["method"], config["params"])
    adapter.restore_config(config)
    return restore_common(adapter, config, directory)
