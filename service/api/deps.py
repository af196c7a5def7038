"""The one way the HTTP layer reaches the application: `Services`, and typed dependencies over it.

`service.app` builds one `Services` at start-up and keeps it on `app.state.services`; settings,
request metrics and the authentication throttle exist before start-up and live beside it. No other
module reads `app.state`:
routes and dashboard views declare what they need with the `...Dep` aliases below, and the query
hot path (a plain Starlette route, see routes/collections.py) awaits the same functions itself.

The accessors are `async def` on purpose: FastAPI runs plain `def` dependencies in its thread
pool, and a thread hop per dependency costs more than these attribute reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from index import IndexBackend
from service.api.middleware.observability import Metrics
from service.api.throttle import AuthThrottle
from service.core.backfill import Backfill
from service.core.catalog import Catalog
from service.core.compat_matrix import CompatibilityMatrix
from service.core.gallery import Gallery
from service.core.index_sync import SnapshotScheduler
from service.core.jobs import JobRunner
from service.core.transform_graph import TransformGraph
from service.core.upgrades import Upgrades
from service.settings import Settings
from service.store import Store


@dataclass
class Services:
    """The application objects of one running service (built in `service.app`'s lifespan)."""

    store: Store
    catalog: Catalog
    backend: IndexBackend
    gallery: Gallery
    transforms: TransformGraph
    upgrades: Upgrades
    runner: JobRunner
    scheduler: SnapshotScheduler
    backfill: Backfill
    compat: CompatibilityMatrix
    load_error: str | None = None  # set when loading the indexes failed (reported by /readyz)


async def services(request: Request) -> Services:
    return request.app.state.services


async def settings(request: Request) -> Settings:
    return request.app.state.settings


async def metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def throttle(request: Request) -> AuthThrottle:
    return request.app.state.throttle


def _service(name: str) -> Callable[[Request], Awaitable[Any]]:
    """An accessor for one attribute of the running `Services`."""

    async def get(request: Request) -> Any:
        return getattr(request.app.state.services, name)

    get.__name__ = name
    return get


catalog = _service("catalog")
gallery = _service("gallery")
store = _service("store")
upgrades = _service("upgrades")
backfill = _service("backfill")
compat = _service("compat")

ServicesDep = Annotated[Services, Depends(services)]
SettingsDep = Annotated[Settings, Depends(settings)]
MetricsDep = Annotated[Metrics, Depends(metrics)]
ThrottleDep = Annotated[AuthThrottle, Depends(throttle)]
CatalogDep = Annotated[Catalog, Depends(catalog)]
GalleryDep = Annotated[Gallery, Depends(gallery)]
StoreDep = Annotated[Store, Depends(store)]
UpgradesDep = Annotated[Upgrades, Depends(upgrades)]
BackfillDep = Annotated[Backfill, Depends(backfill)]
CompatDep = Annotated[CompatibilityMatrix, Depends(compat)]
