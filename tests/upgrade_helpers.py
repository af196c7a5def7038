"""Helpers for upgrade tests: the WordNet subset, lineage set-up, job waiting, ranking metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from service.cli.job_watch import wait_for_job
from tests.helpers import b64, make_collection, make_model, upsert

DATA = Path(__file__).parent / "data" / "wordnet_subset.npz"


def wordnet() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    d = np.load(DATA)
    return (d["minilm"].astype(np.float32), d["mpnet"].astype(np.float32), d["labels"],
            [str(i) for i in d["ids"]])


def upgrade_id(client: httpx.Client, new_model: str) -> int:
    return next(u["id"] for u in client.get("/v1/upgrades").json() if u["new_model"] == new_model)


def wait_job(client: httpx.Client, job_id: int, timeout: float = 120) -> dict:
    return wait_for_job(client, job_id, timeout=timeout, interval=0.05)


def upload_pairs(client: httpx.Client, uid: int, ids: list[str], old: np.ndarray, new: np.ndarray,
                 labels: list[str] | None = None, batch: int = 200) -> httpx.Response:
    """Upload in batches (the test servers cap bodies at 2 MB); the last response, or the first error."""
    for start in range(0, len(ids), batch):
        part = slice(start, start + batch)
        body = {"ids": ids[part], "old_vectors_b64": b64(old[part]), "new_vectors_b64": b64(new[part])}
        if labels is not None:
            body["labels"] = labels[part]
        r = client.post(f"/v1/upgrades/{uid}/pairs", json=body)
        if r.status_code != 200:
            return r
    return r


def train(client: httpx.Client, uid: int, method: str = "procrustes", **extra) -> dict:
    r = client.post(f"/v1/upgrades/{uid}/train", json={"method": method, **extra})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["state"] == "succeeded", job
    return job


def lineage_with_gallery(client: httpx.Client, names: tuple[str, str, str], old: np.ndarray, new: np.ndarray,
                         ids: list[str], labels: np.ndarray) -> int:
    """v1 (old) with a collection holding every item in v1, v2 (new) as its successor; the upgrade id."""
    v1, v2, coll = names
    make_model(client, v1, old.shape[1])
    make_collection(client, coll, v1)
    r = upsert(client, coll, v1, ids, old, [{"label": str(x)} for x in labels], compact=True)
    assert r.status_code == 200, r.text
    make_model(client, v2, new.shape[1], successor_of=v1)
    return upgrade_id(client, v2)


def service_ranking(client: httpx.Client, coll: str, model: str, queries: np.ndarray, k: int) -> list[dict]:
    r = client.post(f"/v1/collections/{coll}/query",
                    json={"model": model, "vectors_b64": b64(queries), "k": k, "include_payload": False})
    assert r.status_code == 200, r.text
    return r.json()


def map_at_r(ranked: list[list[str]], query_ids: list[str], label_of: dict[str, str]) -> float:
    """mAP@R over rankings of item ids (the query item itself removed), relevance = same label."""
    sizes: dict[str, int] = {}
    for lab in label_of.values():
        sizes[lab] = sizes.get(lab, 0) + 1
    total = 0.0
    for qid, row in zip(query_ids, ranked, strict=True):
        r = sizes[label_of[qid]] - 1
        rel = np.array([label_of[i] == label_of[qid] for i in row if i != qid][:r], dtype=float)
        if r and len(rel):
            precision = np.cumsum(rel) / np.arange(1, len(rel) + 1)
            total += float((precision * rel).sum() / r)
    return total / len(query_ids)
