"""HTTP layer: routes, request/response schemas, authentication, middleware and the dashboard.

It parses and validates requests, calls the application layer (`service.core`) and shapes the
JSON; no SQL and no index access happen here. A new endpoint goes in `service/api/routes/`.
"""
