"""Compatibility transformations between embedding models (pure library: no service imports).

    from adapters import create, load
    adapter = create("auto")
    adapter.fit(x_old_train, x_new_train, labels_train)
    queries_in_old_space = adapter.transform(x_new_queries)
    adapter.save("upgrade-v1-v2/")

`methods/` holds one module per method, each registering itself in `registry.py`; `base.py` is
the interface; `metrics.py` and `evaluate.py` measure compatibility; `bundle.py` is what a trained
upgrade serves (maps both ways, score calibration, backfill order); `pair_selection.py` picks the
training pairs nearest the gallery a map will serve.
"""

from adapters import methods as _methods  # noqa: F401  (registers every method)
from adapters.base import Adapter, FitReport
from adapters.registry import METHODS, MethodSpec, baselines, candidates, create, load, servable

__all__ = ["METHODS", "Adapter", "FitReport", "MethodSpec", "baselines", "candidates", "create", "load", "servable"]
