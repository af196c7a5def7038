"""Small helpers for API tests."""

from __future__ import annotations

import base64
import time

import httpx
import numpy as np


def b64(vectors: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode()


def make_model(client: httpx.Client, name: str, dim: int, **extra) -> dict:
    r = client.post("/v1/models", json={"name": name, "dim": dim, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def make_collection(client: httpx.Client, name: str, model: str, **extra) -> dict:
    r = client.post("/v1/collections", json={"name": name, "model": model, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def upsert(client: httpx.Client, collection: str, model: str, ids: list[str], vectors: np.ndarray,
           payloads: list | None = None, compact: bool = False, **fields) -> httpx.Response:
    items = []
    for i, (item_id, vec) in enumerate(zip(ids, vectors, strict=True)):
        item = {"id": item_id}
        if compact:
            item["vector_b64"] = b64(vec)
        else:
            item["vector"] = [float(v) for v in vec]
        if payloads is not None:
            item["payload"] = payloads[i]
        items.append(item)
    return client.post(f"/v1/collections/{collection}/items", json={"model": model, "items": items, **fields})


def wait_until_trained(client: httpx.Client, collection: str, backend: str) -> None:
    """IVF training runs beside the live index (exact until then): wait for the codes to serve."""
    deadline = time.monotonic() + 30
    while True:
        part = client.get(f"/v1/collections/{collection}").json()["partitions"][0]
        if not part["rebuilding"] and (backend != "faiss" or part["structure"] == "ivf"):
            return
        assert time.monotonic() < deadline, f"IVF training did not finish: {part}"
        time.sleep(0.05)
