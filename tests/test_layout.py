"""The architecture as code: layering, the method registry, and one query response definition."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from adapters import METHODS, baselines, candidates, create, servable
from adapters.base import Adapter
from adapters.methods.auto import Auto
from adapters.registry import register_method
from service.api.routes.collections import fast_query_route
from service.api.schemas import QueryOut, TrainRequest
from tests.conftest import unique
from tests.helpers import make_collection, make_model, upsert

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(package: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[str(path.relative_to(ROOT))] = names
    return out


@pytest.mark.parametrize("library", ["index", "adapters"])
def test_pure_libraries_never_import_the_service(library: str) -> None:
    offenders = {f: sorted(m for m in mods if m == "service" or m.startswith("service."))
                 for f, mods in _imported_modules(library).items()}
    assert not {f: m for f, m in offenders.items() if m}, "index/ and adapters/ must not import service/"


def test_application_layer_never_imports_the_http_layer() -> None:
    offenders = {f: sorted(m for m in mods if m.startswith("service.api"))
                 for f, mods in _imported_modules("service/core").items()}
    assert not {f: m for f, m in offenders.items() if m}, "service/core must not import service/api"


def test_the_store_never_imports_the_layers_above_it() -> None:
    offenders = {f: sorted(m for m in mods if m.startswith(("service.core", "service.api")))
                 for f, mods in _imported_modules("service/store").items()}
    assert not {f: m for f, m in offenders.items() if m}, "service/store must not import service/core or api"


def test_the_client_stands_alone() -> None:
    """nobackfill.client talks HTTP only: it imports none of the server's packages."""
    server = ("service", "index", "adapters", "migrations")
    offenders = {f: sorted(m for m in mods if m.split(".")[0] in server)
                 for f, mods in _imported_modules("nobackfill").items()}
    assert not {f: m for f, m in offenders.items() if m}


def test_no_module_but_deps_reads_app_state() -> None:
    """One way to reach the application objects: the accessors in service/api/deps.py."""
    readers = [str(p.relative_to(ROOT)) for p in (ROOT / "service").rglob("*.py")
               if "app.state" in p.read_text() and p.name not in {"deps.py", "app.py"}]
    assert readers == []


# ---- the method registry ----------------------------------------------------------------------
def test_registry_is_the_one_list_of_methods() -> None:
    trained = ["lambda_orth", "oca", "bt2", "drift_lowrank", "drift_mlp", "rank_distill"]
    assert list(METHODS) == ["procrustes", "affine", "adjoint", "hedge", *trained, "neighbour_memory", "slerp", "auto"]
    assert candidates() == ["procrustes", "affine", "adjoint", *trained, "neighbour_memory"]
    assert [n for n, s in METHODS.items() if s.cls.trained] == trained
    assert baselines() == ["procrustes", "affine"]
    # the hedge is not fitted per fold: auto blends its two parts' out-of-fold queries
    assert "slerp" not in servable() and set(candidates()) | {"auto", "hedge"} == set(servable())
    assert Auto.default_params()["methods"] == candidates()
    assert all(name in TrainRequest.model_fields["method"].description for name in servable())
    for name, spec in METHODS.items():
        assert spec.cls.name == name and spec.defaults == spec.cls.default_params()


def test_a_registered_method_is_created_and_offered_to_auto() -> None:
    @register_method(candidate=True)
    class Doubling(Adapter):
        name = "test_doubling"

        def _fit(self, x_old, x_new, labels, seed, progress):
            from adapters.base import FitReport
            return FitReport(method=self.name)

        def transform(self, x_new, x_old=None):
            return 2 * x_new

        def tensors(self):
            return {}

        def load_tensors(self, tensors):
            return None

    try:
        assert isinstance(create("test_doubling"), Doubling)
        assert "test_doubling" in candidates() and "test_doubling" in servable()
        assert "test_doubling" in Auto.default_params()["methods"]
        with pytest.raises(ValueError, match="registered twice"):
            register_method()(type("Other", (Doubling,), {}))
    finally:
        del METHODS["test_doubling"]
    assert "test_doubling" not in candidates()


# ---- one query response definition ------------------------------------------------------------
def test_fast_query_path_and_documented_route_serve_the_same_body(client, live) -> None:
    """The hot path (a plain Starlette route) and the documented FastAPI route answer identically,
    and both bodies validate against QueryOut, the schema the OpenAPI document publishes."""
    v1, v2, coll = unique("v1"), unique("v2"), unique("c")
    make_model(client, v1, 8)
    make_model(client, v2, 8, successor_of=v1)
    make_collection(client, coll, v1)
    x = np.random.default_rng(3).normal(size=(30, 8)).astype(np.float32)
    assert upsert(client, coll, v1, [f"i{i}" for i in range(20)], x[:20], [{"i": i} for i in range(20)]).is_success
    assert upsert(client, coll, v2, [f"j{i}" for i in range(10)], x[20:], None).is_success  # no path: skipped
    requests = [
        {"model": v1, "vector": x[0].tolist(), "k": 5},
        {"model": v1, "vectors": x[:3].tolist(), "k": 4, "include_payload": False},
        {"model": v2, "vector": x[25].tolist(), "k": 3},
    ]
    routes = live.app.router.routes
    fast = [r.json() for r in (client.post(f"/v1/collections/{coll}/query", json=q) for q in requests)]
    assert routes[0] is fast_query_route
    routes.pop(0)  # from here on FastAPI's documented route answers
    try:
        documented = [r.json() for r in (client.post(f"/v1/collections/{coll}/query", json=q) for q in requests)]
    finally:
        routes.insert(0, fast_query_route)
    assert fast == documented
    for body in fast:
        assert QueryOut.model_validate(body).model_dump(exclude_none=True) == body
    assert "payload" in fast[0]["hits"][0] and "payload" not in fast[1]["results"][0]["hits"][0]
    assert fast[0]["skipped"] == [{"model": v2, "items": 10, "reason": f"no active transformation path from {v1!r}"}]


@pytest.mark.skipif(shutil.which("ruff") is None and not (ROOT / ".venv/bin/ruff").exists(),
                    reason="ruff is not installed (pip install -e '.[test]')")
def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(ROOT / ".venv/bin/ruff")
    result = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:]


def test_settings_refuse_an_unknown_index_backend(tmp_path) -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    assert Settings(data_dir=tmp_path).index_backend == "faiss"
    with pytest.raises(ValidationError, match="unknown index backend 'nope'"):
        Settings(data_dir=tmp_path, index_backend="nope")
