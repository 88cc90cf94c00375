"""The FastAPI app factory: one process serves every configured shard."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from application.leadership import Leadership
from application.read_confirmation import ReadConfirmation
from application.wal.writer import ShardWriter
from infra.api import health, routes
from infra.api.errors import GuardMiddleware, Receive, Scope, Send, install_error_handlers
from infra.api.facade import Facade, LagFn
from infra.api.fastlane import OrderFastLane
from infra.api.history import HistoryReader
from infra.api.keys import KeyStore
from infra.api.metrics import MetricsMiddleware
from infra.api.peer import PeerAckLane
from infra.api.ratelimit import RateLimiter
from infra.api.reads import ReadStampMiddleware, document_read_headers
from infra.api.witness import WitnessGuard
from infra.settings import Settings

# FastAPI >= 0.165 looks up OpenTelemetry providers on every request; this service exports its
# own Prometheus metrics (infra/api/metrics.py), so that per-request work buys nothing here.
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


class ExchangeAPI(FastAPI):
    """The facade's app: POST /v1/orders goes to the fast lane ahead of every framework layer
    (infra/api/fastlane.py), a standby's confirmations to the peer lane (infra/api/peer.py),
    everything else to FastAPI as usual."""

    fast_lane: OrderFastLane | None = None
    peer_acks: PeerAckLane | None = None  # set by a node whose regions share a peer token
    rate_limiter: RateLimiter | None = None  # per key and per address, ahead of everything

    def openapi(self) -> dict[str, Any]:
        """The framework's description, with the headers every read answers with."""
        if self.openapi_schema is None:
            document_read_headers(super().openapi())
        return self.openapi_schema  # type: ignore[return-value]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self.rate_limiter
        if limiter is not None and limiter.takes(scope) and await limiter.refused(scope, send):
            return
        lane = self.fast_lane
        if lane is not None and lane.takes(scope):
            await lane(scope, receive, send)
        elif self.peer_acks is not None and self.peer_acks.takes(scope):
            await self.peer_acks(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    shards: Mapping[str, ShardWriter],
    leadership: Leadership,
    key_store: KeyStore,
    *,
    replica_lag_ms: LagFn | None = None,
    history: HistoryReader | None = None,
    log_only: bool = False,
    reads: ReadConfirmation | None = None,
) -> ExchangeAPI:
    """Wire routes to started shard writers; the caller owns (and stops) the writers.
    `history` reads the read models of the region's own database: order and trade history is
    served from them and from the overlay of what they do not hold yet, indexed from the
    tracking row before this returns (Facade.fill_overlays). A witness (`log_only`) serves no
    history: its public routes send every caller to the leader (infra/api/witness.py).
    `reads` says whether what a read shows can still be taken back (a node's roles and
    gates); without it, each writer's sync gate does, and a writer without a gate is the only
    copy (infra/api/reads.py)."""
    configured = settings.shards()
    unknown = [shard for shard in shards if shard not in configured]
    if unknown:
        raise ValueError(f"shards not in EXDR_SHARDS: {', '.join(unknown)}")
    if history is None and not log_only:
        raise ValueError("a facade that serves history needs the region's read models")
    facade = Facade(
        shards,
        leadership,
        key_store,
        replica_lag_ms=replica_lag_ms,
        history=None if log_only else history,
        overlay_sync_records=settings.overlay_sync_records,
        reads=reads,
    )
    if not log_only:  # a witness keeps the WAL, not the state: nothing to index
        facade.fill_overlays()
    app = ExchangeAPI(
        title="exchange-dr",
        version="1",
        summary="Orders, accounts and market data of the exchange's shards.",
        **_NO_TELEMETRY,
    )
    app.state.facade = facade
    install_error_handlers(app)
    app.include_router(routes.router)
    app.include_router(health.router)
    app.add_middleware(ReadStampMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=facade.metrics)
    if log_only:
        app.add_middleware(WitnessGuard, leadership=leadership, shard_ids=list(shards))
    app.add_middleware(GuardMiddleware)
    app.fast_lane = OrderFastLane(functools.partial(FastAPI.__call__, app), facade)
    limits = settings.security
    app.rate_limiter = RateLimiter.of(
        key_store,
        rate_per_key=limits.rate_per_key,
        burst_per_key=limits.burst_per_key,
        rate_per_address=limits.rate_per_address,
        burst_per_address=limits.burst_per_address,
        counted=lambda limit: facade.metrics.rate_limited.labels(limit).inc(),
    )
    return app
