"""The Python client of the nobackfill service: sync (`Client`) and asyncio (`AsyncClient`), both
over httpx, with numpy arrays in and out (base64 float32 on the wire), typed errors that carry
the service's `field` and `detail`, retries with backoff, bulk upsert with a progress bar and
`wait_for_job`.

    from nobackfill.client import Client
    with Client("http://127.0.0.1:8000", api_key="...") as nb:
        nb.create_model("v1", dim=384)
        nb.create_collection("docs", "v1")
        nb.upsert_many("docs", "v1", ids, vectors, progress=True)
        hits = nb.query("docs", "v1", vectors[0], k=5).hits[0]
"""

from nobackfill.client.aio import AsyncClient
from nobackfill.client.calls import Call, Hit, QueryResult
from nobackfill.client.errors import (
    AuthError,
    ConflictError,
    InvalidRequest,
    NobackfillError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TooLargeError,
    UnavailableError,
    UnsupportedMediaTypeError,
)
from nobackfill.client.retry import NO_RETRY, RetryPolicy
from nobackfill.client.sync import Client

__all__ = [
    "NO_RETRY", "AsyncClient", "AuthError", "Call", "Client", "ConflictError", "Hit", "InvalidRequest",
    "NobackfillError", "NotFoundError", "QueryResult", "RateLimitedError", "RetryPolicy", "ServerError",
    "TooLargeError", "UnavailableError", "UnsupportedMediaTypeError",
]
