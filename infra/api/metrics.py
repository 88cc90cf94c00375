"""Prometheus metrics of the facade, in a registry of its own (one per app instance)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from infra.api.errors import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ApiMetrics:
    """Request counts and latency by route template; command ack latency by shard."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "exdr_api_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "exdr_api_request_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.command_ack = Histogram(
            "exdr_api_command_ack_seconds",
            "From submitting a command to its writer until its commit was acknowledged",
            ["shard", "command"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fast_lane = Counter(
            "exdr_api_fast_lane_total",
            "POST /v1/orders requests by the path they took: the fast lane, or the full "
            "framework stack (bad body, unknown key, other content type)",
            ["path"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "exdr_api_rate_limited_total",
            "Requests refused with 429, by the limit they hit (key or address)",
            ["limit"],
            registry=self.registry,
        )
        self.not_leader = Counter(
            "exdr_api_not_leader_total",
            "Commands refused because this instance does not lead",
            ["shard"],
            registry=self.registry,
        )
        self.history_overlay = Gauge(
            "exdr_api_history_overlay_entries",
            "Order views and fills held in memory because the read models do not have them yet",
            ["shard"],
            registry=self.registry,
        )

        self.unconfirmed_reads = Counter(
            "exdr_api_unconfirmed_reads_total",
            "Reads whose state no majority of replicas held in time, by shard and outcome: "
            "refused (503 unconfirmed, strict) or labelled (X-Exdr-State: unconfirmed)",
            ["shard", "outcome"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request under its route template, not its raw path."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 503

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
