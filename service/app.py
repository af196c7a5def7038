"""The application factory: builds the store, catalog, index backend and application objects at
start-up (`Services`) and mounts the HTTP layer (`service.api`) over them."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily

from index import create_backend
from service.api import deps
from service.api.auth import require_reader
from service.api.dashboard import views as dashboard_views
from service.api.deps import Services
from service.api.docs_ui import install_docs
from service.api.errors import install_error_handlers
from service.api.middleware.body_limit import BodyLimitMiddleware
from service.api.middleware.observability import Metrics, MetricsMiddleware
from service.api.openapi import install_openapi
from service.api.routes import ROUTERS, collections
from service.api.schemas import QueryRequest
from service.api.throttle import AuthThrottle
from service.core.backfill import Backfill
from service.core.catalog import Catalog
from service.core.compat_matrix import CompatibilityMatrix
from service.core.gallery import Gallery
from service.core.heap_trim import HeapTrimmer
from service.core.index_sync import SnapshotScheduler, load_all
from service.core.jobs import JobRunner
from service.core.transform_graph import TransformGraph
from service.core.upgrades import TRAIN_JOB, Upgrades
from service.settings import Settings, get_settings
from service.store import Store
from service.store.db import make_engine, migrate

log = logging.getLogger("nobackfill")


def _gauges(store: Store, catalog: Catalog) -> list[GaugeMetricFamily]:
    """Read at scrape time: items per collection and model version, jobs per state."""
    items = GaugeMetricFamily("nobackfill_items", "Items per collection and model version",
                              labels=["collection", "model"])
    for c in catalog.collections():
        for model_id, n in store.item_counts(c.id).items():
            items.add_metric([c.name, catalog.model_by_id(model_id).name], n)
    jobs = GaugeMetricFamily("nobackfill_jobs", "Jobs per state", labels=["state"])
    for state, n in store.job_counts().items():
        jobs.add_metric([state], n)
    return [items, jobs]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.resolved_database_url, settings.sqlite_synchronous)
        migrate(engine)
        store = Store(engine)
        catalog = Catalog(store, settings.max_dim)
        backend = create_backend(settings.index_backend, **settings.index_backend_options())
        transforms = TransformGraph(store, settings.data_dir, settings.routing_refresh_seconds)
        gallery = Gallery(store, catalog, backend, transforms, settings.hit_cache_items, settings.inline_search_work,
                          follow_other_writers=backend.durable, follow_seconds=settings.milvus_refresh_seconds,
                          journal_writes=backend.durable)
        trimmer = HeapTrimmer(settings.heap_trim_idle_seconds)
        gallery.on_write = trimmer.wrote
        upgrades = Upgrades(store, catalog, settings, on_activation=transforms.reload)
        upgrades.discard_partial_files()
        runner = JobRunner(store, {TRAIN_JOB: upgrades.run_training}, stale_seconds=settings.job_stale_seconds)
        if settings.run_worker:
            upgrades.on_job_queued = runner.wake
        scheduler = SnapshotScheduler(backend, settings.snapshot_every_changes,
                                      settings.snapshot_interval_seconds)
        services = Services(store=store, catalog=catalog, backend=backend, gallery=gallery, transforms=transforms,
                            upgrades=upgrades, runner=runner, scheduler=scheduler,
                            backfill=Backfill(store, catalog, gallery),
                            compat=CompatibilityMatrix(store, catalog, transforms))
        app.state.services = services
        log.info("nobackfill starting: database=%s index=%s", engine.url.render_as_string(hide_password=True),
                 backend.describe())

        def load() -> None:
            try:
                transforms.start()
                load_all(store, backend, gallery.model_dims(), scheduler)
                gallery.ready.set()
                if not backend.durable:  # snapshots only shorten FAISS start-ups; Milvus keeps its own state
                    scheduler.start()
                if settings.run_worker:
                    runner.start()
            except Exception as exc:  # surfaced through /readyz
                log.exception("loading indexes failed")
                services.load_error = type(exc).__name__

        loader = threading.Thread(target=load, name="nobackfill-index-load", daemon=True)
        loader.start()
        trimmer.start()
        try:
            yield
        finally:
            loader.join(timeout=60)
            trimmer.stop()
            runner.stop()
            transforms.stop()
            if gallery.ready.is_set() and not backend.durable:
                scheduler.stop(final_snapshot=True)
            backend.close()
            engine.dispose()

    app = FastAPI(
        title="nobackfill",
        version="0.1.0",
        description="Backfill-free embedding model upgrades: register encoders, host galleries, query across versions.",
        lifespan=lifespan,
        docs_url=None,  # served from local files by install_docs
        redoc_url=None,
    )
    app.state.settings = settings
    def gauges() -> list[GaugeMetricFamily]:
        services: Services | None = getattr(app.state, "services", None)
        return _gauges(services.store, services.catalog) if services is not None else []

    app.state.metrics = Metrics(gauges=gauges)
    app.state.throttle = AuthThrottle(settings.auth_failures_per_client, settings.login_failures_overall)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(dashboard_views.router)
    app.router.routes.insert(0, collections.fast_query_route)  # the query hot path, first to match
    install_docs(app)
    app.mount("/dashboard/static", StaticFiles(directory=dashboard_views.HERE / "static"), name="dashboard-static")

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_reader)])
    def prometheus_metrics(metrics: deps.MetricsDep) -> Response:
        """Prometheus exposition; behind the read key when reads require one (names are data too)."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    install_openapi(app, ROUTERS, body_extra={collections.query.__name__: QueryRequest})
    return app
