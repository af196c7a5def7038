"""A job worker process without HTTP: `nobackfill worker`.

It shares the database and the data directory with the service; transformations it activates
reach the serving processes through their routing refresh (service/core/transform_graph.py).
"""

from __future__ import annotations

import logging
import signal
import threading

from service.core.catalog import Catalog
from service.core.jobs import JobRunner
from service.core.upgrades import TRAIN_JOB, Upgrades
from service.settings import get_settings
from service.store import Store
from service.store.db import make_engine, migrate

log = logging.getLogger("nobackfill.worker")


def run_worker() -> None:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = make_engine(settings.resolved_database_url, settings.sqlite_synchronous)
    migrate(engine)
    store = Store(engine)
    catalog = Catalog(store, settings.max_dim)
    upgrades = Upgrades(store, catalog, settings)
    runner = JobRunner(store, {TRAIN_JOB: upgrades.run_training}, stale_seconds=settings.job_stale_seconds)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runner.start()
    log.info("worker %s running", runner.name)
    stop.wait()
    runner.stop(timeout=30)
    engine.dispose()
