"""API-key protection of writes/admin calls, and optionally of reads."""

from __future__ import annotations

import logging

import httpx
import pytest

KEY = "s3cret-key-for-tests"


@pytest.fixture
def secured(start_server, tmp_path):
    def start(read_requires_key: bool):
        return start_server(f"sqlite:///{tmp_path / f'auth-{read_requires_key}.db'}",
                            data_dir=tmp_path / f"d{read_requires_key}", api_key=KEY,
                            read_requires_key=read_requires_key)
    return start


def test_writes_need_the_key_reads_open_by_default(secured, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    server = secured(read_requires_key=False)
    with httpx.Client(base_url=server.url) as c:
        body = {"name": "v1", "dim": 4}
        assert c.post("/v1/models", json=body).status_code == 401
        assert c.post("/v1/models", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert c.post("/v1/models", json=body, headers={"Authorization": f"Basic {KEY}"}).status_code == 401
        auth = {"Authorization": f"Bearer {KEY}"}
        assert c.post("/v1/models", json=body, headers=auth).status_code == 201
        assert c.post("/v1/collections", json={"name": "g", "model": "v1"}).status_code == 401
        assert c.post("/v1/collections", json={"name": "g", "model": "v1"}, headers=auth).status_code == 201
        item = {"model": "v1", "items": [{"id": "a", "vector": [1, 0, 0, 0]}]}
        assert c.post("/v1/collections/g/items", json=item).status_code == 401
        assert c.post("/v1/collections/g/items", json=item, headers=auth).status_code == 200
        assert c.delete("/v1/collections/g/items/a").status_code == 401
        # reads and queries are open in this configuration
        assert c.get("/v1/models").status_code == 200
        assert c.post("/v1/collections/g/query", json={"model": "v1", "vector": [1, 0, 0, 0]}).status_code == 200
        assert c.get("/v1/collections/g/items/a").status_code == 200
        assert c.get("/v1/models").json()[0]["name"] == "v1"
    assert KEY not in caplog.text, "the key must never be logged"


def test_reads_can_be_closed(secured) -> None:
    server = secured(read_requires_key=True)
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/v1/models").status_code == 401
        query = {"model": "v1", "vector": [1, 0, 0, 0]}
        assert c.post("/v1/collections/g/query", json=query).status_code == 401
        # the query hot path (a plain Starlette route, service/api/routes/collections.py) checks keys the same way
        assert c.post("/v1/collections/g/query", json=query, headers={"Authorization": "Bearer no"}).status_code == 403
        r = c.post("/v1/collections/g/query", json=query, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 404 and r.json()["error"] == "not_found" and r.json()["field"] == "collection"
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert c.get("/healthz").status_code == 200, "probes stay open for orchestrators"


def test_settings_never_print_the_key() -> None:
    from service.settings import Settings

    s = Settings(api_key=KEY)
    assert KEY not in repr(s) and KEY not in str(s.model_dump())


def test_upgrade_and_job_writes_need_the_key(secured) -> None:
    server = secured(read_requires_key=False)
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.url) as c:
        assert c.post("/v1/models", json={"name": "a", "dim": 2}, headers=auth).status_code == 201
        assert c.post("/v1/models", json={"name": "b", "dim": 2, "successor_of": "a"}, headers=auth).status_code == 201
        assert c.post("/v1/collections", json={"name": "g", "model": "a"}, headers=auth).status_code == 201
        uid = c.get("/v1/upgrades").json()[0]["id"]  # reads stay open
        pairs = {"old_vectors": [[1, 0]], "new_vectors": [[0, 1]]}
        for path, body in [(f"/v1/upgrades/{uid}/pairs", pairs), (f"/v1/upgrades/{uid}/train", {}),
                           (f"/v1/upgrades/{uid}/activate", {}), (f"/v1/upgrades/{uid}/deactivate", None),
                           ("/v1/jobs/1/cancel", None), ("/v1/collections/g/retire", {"model": "a"})]:
            assert c.post(path, json=body).status_code == 401, path
        assert c.post(f"/v1/upgrades/{uid}/pairs", json=pairs, headers=auth).status_code == 200
        assert c.get("/v1/jobs").status_code == 200 and c.get("/v1/collections/g/backfill").status_code == 200
