"""Shared fixtures: databases (SQLite and PostgreSQL), a real HTTP server, and an HTTP client."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text

from bench.common import pg_database
from service.app import create_app
from service.settings import Settings

PG_ADMIN_URL = os.environ.get("NOBACKFILL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_unreachable_reason() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # report why, then skip only the PostgreSQL variants
        return f"PostgreSQL unreachable at {PG_ADMIN_URL}: {type(exc).__name__}: {str(exc).splitlines()[0]}"


@pytest.fixture(scope="session")
def pg_server() -> str:
    reason = _pg_unreachable_reason()
    if reason:
        pytest.skip(reason)
    return PG_ADMIN_URL


def _fresh_pg_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    """(url of a fresh, empty PostgreSQL database on `admin_url`'s server, the call that drops it):
    bench.common.pg_database for callers that hold the database across a try/finally of their own."""
    stack = ExitStack()
    return stack.enter_context(pg_database("nobackfill_test", admin_url)), stack.close


def _database_of_kind(request: pytest.FixtureRequest, sqlite_dir: Path, kind: str | None = None) -> Iterator[str]:
    """A fresh, empty database of `kind` (default `request.param`), dropped afterwards (PostgreSQL)."""
    if (kind or request.param) == "sqlite":
        yield f"sqlite:///{sqlite_dir / 'test.db'}"
        return
    with pg_database("nobackfill_test", request.getfixturevalue("pg_server")) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind (function scope)."""
    yield from _database_of_kind(request, tmp_path)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like `database_url` but shared by a module (one server per database kind)."""
    yield from _database_of_kind(request, tmp_path_factory.mktemp("db"))


@pytest.fixture
def gallery_parts(database_url: str, tmp_path: Path) -> Iterator[tuple]:
    """(store, catalog, make_gallery) on a fresh database of each kind: `make_gallery(directory)` is a
    ready Gallery over a FAISS backend keeping its snapshots in `directory` (one per simulated process)."""
    from index import create_backend
    from service.core.catalog import Catalog
    from service.core.gallery import Gallery
    from service.core.transform_graph import TransformGraph
    from service.store import Store
    from service.store.db import make_engine, migrate

    engine = make_engine(database_url)
    migrate(engine)
    store = Store(engine)
    catalog = Catalog(store, max_dim=4096)

    def make_gallery(directory: Path) -> Gallery:
        gallery = Gallery(store, catalog, create_backend("faiss", directory=directory), TransformGraph(store, tmp_path))
        gallery.ready.set()
        return gallery

    yield store, catalog, make_gallery
    engine.dispose()


class LiveServer:
    """A uvicorn server on a free loopback port, in a thread of the test process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        wait_ready(self.url)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()


def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/readyz", timeout=2)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise TimeoutError(f"server at {url} not ready: {last}")


def make_settings(data_dir: Path, database_url: str, **overrides) -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url, **overrides)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[callable]:
    """Factory: start a live server with given settings; every server is stopped at teardown."""
    servers: list[LiveServer] = []

    def start(database_url: str, data_dir: Path | None = None, **overrides) -> LiveServer:
        server = LiveServer(make_settings(data_dir or tmp_path / "data", database_url, **overrides)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# (database, index backend) set-ups the HTTP suites run on: the storage layer on both databases,
# the index on both backends (Milvus on PostgreSQL: the scale-out deployment).
LIVE_SETUPS = [("sqlite", "faiss"), ("postgresql", "faiss"), ("postgresql", "milvus")]


def backend_settings(backend: str) -> dict:
    """Settings overrides for an index backend in tests: Milvus Lite under data_dir, its own prefix."""
    if backend == "faiss":
        return {}
    from tests.backends import milvus_unavailable

    reason = milvus_unavailable()
    if reason:
        pytest.skip(reason)
    return {"index_backend": "milvus", "milvus_prefix": f"t{uuid.uuid4().hex[:8]}_", "milvus_refresh_seconds": 0.0,
            "milvus_flush_seconds": 0.5}


@pytest.fixture(scope="module", params=LIVE_SETUPS, ids=lambda s: f"{s[0]}-{s[1]}")
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One open (no API key) server per set-up, shared by a module's tests."""
    database, backend = request.param
    for url in _database_of_kind(request, tmp_path_factory.mktemp("db"), database):
        server = LiveServer(make_settings(tmp_path_factory.mktemp("data"), url, max_body_bytes=2 * 1024 * 1024,
                                          **backend_settings(backend))).start()
        yield server
        server.stop()


@pytest.fixture
def client(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=30) as c:
        yield c


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
