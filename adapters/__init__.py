"""Compatibility transformations between embedding models (pure library: no service imports).

    from adapters import create, load
    adapter = create("auto")
    adapter.fit(x_old_train, x_new_train, labels_train)
    queries_in_old_space = adapter.transform(x_new_queries)
    adapter.save("upgrade-v1-v2/")
"""

from adapters.base import Adapter, FitReport
from adapters.registry import METHODS, create, load

__all__ = ["METHODS", "Adapter", "FitReport", "create", "load"]
