"""FastAPI application factory: wires storage, registry, indexes and routes together."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily
from starlette.exceptions import HTTPException as StarletteHTTPException

from index import FaissBackend
from service.auth import require_reader
from service.backfill import Backfill
from service.body_limit import BodyLimitMiddleware
from service.compat_matrix import CompatibilityMatrix
from service.dashboard import views as dashboard_views
from service.db import make_engine, migrate
from service.errors import ApiError
from service.gallery import Gallery
from service.index_sync import SnapshotScheduler, load_all
from service.jobs import JobRunner
from service.json_body import install_openapi
from service.observability import Metrics, MetricsMiddleware
from service.registry import Registry
from service.routes import collections, health, jobs, models
from service.routes import upgrades as upgrade_routes
from service.routing import Router
from service.schemas import PairsUpload, QueryRequest, UpsertRequest
from service.settings import Settings, get_settings
from service.store import Store
from service.upgrades import TRAIN_JOB, Upgrades

log = logging.getLogger("nobackfill")


def _field_path(loc: tuple) -> str:
    """('body', 'items', 3, 'vector') -> 'items[3].vector'."""
    path = ""
    for part in loc:
        if part == "body" and not path:
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.to_body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field_path(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()[:20]]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse({"error": "invalid", "detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                413: "too_large"}.get(exc.status_code, "error")
        return JSONResponse({"error": code, "detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))


def _gauges(store: Store, registry: Registry) -> list[GaugeMetricFamily]:
    """Read at scrape time: items per collection and model version, jobs per state."""
    items = GaugeMetricFamily("nobackfill_items", "Items per collection and model version",
                              labels=["collection", "model"])
    for c in registry.collections():
        for model_id, n in store.item_counts(c.id).items():
            items.add_metric([c.name, registry.model_by_id(model_id).name], n)
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
        registry = Registry(store, settings.max_dim)
        backend = FaissBackend(settings.index_dir, device=settings.device, threads=settings.faiss_threads)
        router = Router(store, settings.data_dir, settings.routing_refresh_seconds)
        gallery = Gallery(store, registry, backend, router, settings.hit_cache_items)
        upgrades = Upgrades(store, registry, settings, on_activation=router.reload)
        upgrades.discard_partial_files()
        runner = JobRunner(store, {TRAIN_JOB: upgrades.run_training}, stale_seconds=settings.job_stale_seconds)
        if settings.run_worker:
            upgrades.on_job_queued = runner.wake
        scheduler = SnapshotScheduler(backend, settings.snapshot_every_changes,
                                      settings.snapshot_interval_seconds)
        app.state.store, app.state.registry, app.state.gallery = store, registry, gallery
        app.state.backend, app.state.scheduler, app.state.load_error = backend, scheduler, None
        app.state.router, app.state.upgrades, app.state.runner = router, upgrades, runner
        app.state.backfill = Backfill(store, registry, router)
        app.state.compat = CompatibilityMatrix(store, registry, router)
        app.state.metrics_gauges = lambda: _gauges(store, registry)
        log.info("nobackfill starting: database=%s device=%s", engine.url.render_as_string(hide_password=True),
                 backend.device)

        def load() -> None:
            try:
                router.start()
                load_all(store, backend, gallery.model_dims(), scheduler)
                gallery.ready.set()
                scheduler.start()
                if settings.run_worker:
                    runner.start()
            except Exception as exc:  # surfaced through /readyz
                log.exception("loading indexes failed")
                app.state.load_error = type(exc).__name__

        loader = threading.Thread(target=load, name="nobackfill-index-load", daemon=True)
        loader.start()
        try:
            yield
        finally:
            loader.join(timeout=60)
            runner.stop()
            router.stop()
            if gallery.ready.is_set():
                scheduler.stop(final_snapshot=True)
            engine.dispose()

    app = FastAPI(
        title="nobackfill",
        version="0.1.0",
        description="Backfill-free embedding model upgrades: register encoders, host galleries, query across versions.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics(gauges=lambda: app.state.metrics_gauges() if hasattr(app.state, "metrics_gauges")
                                else [])
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    _install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(collections.router)
    app.include_router(upgrade_routes.router)
    app.include_router(jobs.router)
    app.include_router(dashboard_views.router)
    app.router.routes.insert(0, collections.fast_query_route)  # the query hot path, first to match
    app.mount("/dashboard/static", StaticFiles(directory=dashboard_views.HERE / "static"), name="dashboard-static")

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_reader)])
    def prometheus_metrics() -> Response:
        """Prometheus exposition; behind the read key when reads require one (names are data too)."""
        return Response(app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    install_openapi(app, [UpsertRequest, QueryRequest, PairsUpload])
    return app
