"""nobackfill's Python client library (`nobackfill.client`).

The server lives in `service/`, `index/` and `adapters/`; this package imports none of them, so an
application needs only httpx, numpy and rich to talk to a running service.
"""
