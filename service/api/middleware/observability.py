"""The service's own request metrics: a rolling window for the dashboard, Prometheus at /metrics.

A pure ASGI middleware times every request and labels it with its route template (so
`/v1/collections/{name}/query` is one series however many collections exist). Two consumers:
- `RequestWindow`: the last `window_seconds` of (time, route, status, seconds) in a bounded deque,
  summarised on demand into rate, latency percentiles and error rate (the dashboard's health page);
- Prometheus counters and a latency histogram in an app-private registry (several apps can live in
  one process, e.g. in tests), plus gauges read at scrape time (items per partition, jobs by state).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

QUERY_ROUTE = "/v1/collections/{name}/query"
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class RequestWindow:
    def __init__(self, window_seconds: float = 600.0, max_events: int = 200_000) -> None:
        self.window_seconds = window_seconds
        self._events: deque[tuple[float, str, int, float]] = deque(maxlen=max_events)
        self._lock = threading.Lock()

    def record(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._events.append((time.time(), route, status, seconds))

    def summary(self, route: str | None = None, window_seconds: float | None = None,
                bucket_seconds: float = 30.0) -> dict[str, Any]:
        """Rate, p50/p95/p99 latency (ms) and error rate over the window, and a per-bucket series."""
        window = window_seconds or self.window_seconds
        now = time.time()
        with self._lock:
            events = [e for e in self._events if e[0] >= now - window and (route is None or e[1] == route)]
        latencies = np.array([e[3] for e in events]) * 1000.0
        errors = sum(1 for e in events if e[2] >= 500)
        rejected = sum(1 for e in events if 400 <= e[2] < 500)
        series = []
        for start in np.arange(now - window, now, bucket_seconds):
            inside = [e for e in events if start <= e[0] < start + bucket_seconds]
            lat = np.array([e[3] for e in inside]) * 1000.0
            series.append({"t": float(start), "requests": len(inside),
                           "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
                           "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None})

        def pct(q: float) -> float | None:
            return float(np.percentile(latencies, q)) if len(latencies) else None

        return {
            "window_seconds": window,
            "requests": len(events),
            "rate_per_s": len(events) / window,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "server_errors": errors, "client_errors": rejected,
            "error_rate": errors / len(events) if events else 0.0,
            "series": series,
        }


class Metrics:
    """Everything the middleware records, and the /metrics text."""

    def __init__(self, gauges: Callable[[], list[GaugeMetricFamily]] | None = None) -> None:
        self.window = RequestWindow()
        self.registry = CollectorRegistry()
        self.requests = Counter("nobackfill_requests", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("nobackfill_request_seconds", "HTTP request latency", ["route"],
                                 buckets=BUCKETS, registry=self.registry)
        if gauges is not None:
            self.registry.register(_GaugeCollector(gauges))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.window.record(route, status, seconds)
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _GaugeCollector:
    def __init__(self, build: Callable[[], list[GaugeMetricFamily]]) -> None:
        self.build = build

    def collect(self):
        yield from self.build()


class MetricsMiddleware:
    """Times every HTTP request; the route label is the matched path template (or 'unmatched')."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            if label not in ("/metrics",):
                self.metrics.observe(label, scope["method"], status["code"], time.perf_counter() - started)
