"""Probes in the manner of Patroni's: /health, /primary, /replica?lag=<ms>, and /metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from infra.api import schemas as s
from infra.api.facade import facade_of

router = APIRouter(tags=["health"])

_PROBE: dict[int | str, dict[str, Any]] = {
    503: {"model": s.Health, "description": "not in the asked role (or lag unknown/too high)"},
    400: {"model": s.Error, "description": "bad query parameter"},
}


def _body(request: Request, role_ok: bool) -> dict[str, Any]:
    facade = facade_of(request.app.state)
    leads = {shard: facade.leadership.is_leader(shard) for shard in facade.shard_ids}
    role = "primary" if all(leads.values()) else ("replica" if not any(leads.values()) else "mixed")
    return {"status": "ok" if role_ok else "unavailable", "role": role, "shards": leads}


@router.get("/health", response_model=s.Health)
async def health(request: Request) -> JSONResponse:
    """The process is alive and serving HTTP."""
    return JSONResponse(_body(request, True))


@router.get("/primary", response_model=s.Health, responses=_PROBE)
async def primary(request: Request) -> JSONResponse:
    """200 only when this instance leads every shard it serves."""
    ok = facade_of(request.app.state).leads_all()
    return JSONResponse(_body(request, ok), status_code=200 if ok else 503)


@router.get("/replica", response_model=s.Health, responses=_PROBE)
async def replica(
    request: Request,
    lag: Annotated[int | None, Query(ge=0, le=86_400_000, description="max lag in ms")] = None,
) -> JSONResponse:
    """200 only on a standby (leads no shard) whose replication lag is within `lag` ms."""
    facade = facade_of(request.app.state)
    ok = not facade.leads_any()
    lag_ms = facade.max_lag_ms()
    if ok and lag is not None:
        ok = lag_ms is not None and lag_ms <= lag
    body = _body(request, ok) | {"lag_ms": lag_ms}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition",
        }
    },
)
async def metrics(request: Request) -> Response:
    """Request counts and latencies, command ack latency, not-leader refusals."""
    return Response(facade_of(request.app.state).metrics.render(), media_type=CONTENT_TYPE_LATEST)
