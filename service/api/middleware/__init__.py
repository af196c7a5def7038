"""ASGI middleware wrapped around every request: body-size limit and request metrics."""
