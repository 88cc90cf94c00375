"""A witness region's facade: it keeps the WAL, not the state, so every public read and command
is sent to the leader (503 not_leader naming it); probes, metrics and the peer lane still answer."""

from __future__ import annotations

import json

from application.leadership import Leadership
from infra.api.errors import ASGIApp, Receive, Scope, Send, error_body, send_json_body


class WitnessGuard:
    """Outer layer of a witness's app: `/v1/...` answers 503 not_leader with the leader's URL."""

    def __init__(self, app: ASGIApp, *, leadership: Leadership, shard_ids: list[str]) -> None:
        self.app = app
        self.leadership = leadership
        self.shard_ids = shard_ids

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        leader = self.leader_url()
        body = error_body(
            "not_leader",
            "this region is a witness: it keeps the WAL, not the exchange's state"
            + (f"; send requests to {leader}" if leader else ""),
            leader=leader,
        )
        await send_json_body(send, 503, json.dumps(body).encode())

    def leader_url(self) -> str | None:
        for shard_id in self.shard_ids:
            url = self.leadership.leader_url(shard_id)
            if url:
                return url
        return None
