"""nobackfill service: HTTP API, application layer and storage around the `index` and `adapters` libraries."""
