"""Application layer: what the service does, independent of HTTP.

Model catalog, gallery writes and routed queries, the transformation graph, upgrades and their
durable jobs, backfill progress, the compatibility matrix, index repair and the hit cache. It
orchestrates the pure libraries `index` and `adapters` and persists through `service.store`.
"""
