"""A witness's facade sends every public read and command to the leader; probes still answer."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from infra.api.witness import WitnessGuard


class _Leadership:
    def is_leader(self, shard_id: str) -> bool:
        return False

    def leader_url(self, shard_id: str) -> str | None:
        return None if shard_id == "shard-1" else "http://127.0.0.1:8080"


async def _inner(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _get(method: str, path: str) -> httpx.Response:
    guard = WitnessGuard(_inner, leadership=_Leadership(), shard_ids=["shard-1", "shard-2"])

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
            return await client.request(method, path)

    return asyncio.run(go())


def test_reads_and_commands_name_the_leader() -> None:
    for method, path in [("GET", "/v1/orders"), ("POST", "/v1/orders"), ("GET", "/v1/book/X")]:
        response = _get(method, path)
        assert response.status_code == 503
        body = response.json()
        assert body["code"] == "not_leader"
        assert body["leader"] == "http://127.0.0.1:8080"


def test_probes_and_metrics_pass() -> None:
    for path in ("/health", "/replica", "/metrics"):
        assert _get("GET", path).status_code == 200
