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


def less_noisy_successor(n: int = 900, classes: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(old, new, labels): a new encoder that sees the same categories as the old one with less noise
    (and in another basis, another dimension) -- pairs on which the closed-form maps pass the ECC."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    signal = rng.normal(size=(classes, 24))[labels] + 0.5 * rng.normal(size=(n, 24))
    old = (signal + 1.2 * rng.normal(size=(n, 24))).astype(np.float32)
    new = ((signal + 0.3 * rng.normal(size=(n, 24))) @ rng.normal(size=(24, 32))).astype(np.float32)
    return old, new, labels
