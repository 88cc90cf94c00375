"""A standby's confirmations (every record up to seq is stored in its region) and the leader's
handling of them: the acks topic (always), a direct request on the peer link (the fast path)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson

from infra.api import peer
from infra.node.node import Node
from infra.replication.peer_link import host_port
from infra.replication.rawhttp import ConnectionPool

PEER_ACK_TIMEOUT_S = 0.5


def accept_standby_ack(node: Node, ack: dict[str, Any], *, path: str = "broker") -> None:
    """A standby's confirmation (from the acks topic or its direct request): every record up
    to ack["seq"] is stored in its region. Thread-safe (the gate locks)."""
    controller = node.controllers.get(str(ack.get("shard", "")))
    if controller is None or ack.get("region") == node.region.name:
        return
    if controller.role not in ("leader", "handing_over"):
        return
    if int(ack.get("epoch", 0)) < controller.app.epoch:
        return  # confirmations of an older epoch prove nothing about ours
    node.confirmations[path] = node.confirmations.get(path, 0) + 1
    controller.gate.standby_stored(int(ack["seq"]), str(ack.get("region", "")))


def wire_acks(node: Node, acks_topic: Any) -> None:
    @node.faust_app.agent(acks_topic)
    async def standby_confirmed(stream: Any) -> None:
        async for value in stream:
            accept_standby_ack(node, orjson.loads(value))


class PeerConfirmer:
    """A standby's direct confirmations to its shard's leader (infra/api/peer.py): at most one
    request in flight; what arrives meanwhile is folded into the next (a confirmation of seq
    covers every record before it). Failures are dropped: the acks topic carries them too."""

    def __init__(self, node: Node, shard_id: str, token: str) -> None:
        self.node = node
        self.shard_id = shard_id
        self._token = token
        self._latest: dict[str, Any] | None = None
        self._task: asyncio.Future[None] | None = None
        self._pools: dict[str, tuple[ConnectionPool, bytes]] = {}

    def offer(self, ack: dict[str, Any]) -> None:
        self._latest = ack
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        while self._latest is not None:
            ack, self._latest = self._latest, None
            coordinator = self.node.coordinator
            url = None if coordinator is None else coordinator.leader_url(self.shard_id)
            if url is None or url == self.node.region.api_url:
                continue
            pool, head = self._pool(url)
            body = orjson.dumps(ack)
            request = head + str(len(body)).encode() + b"\r\n\r\n" + body
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(pool.send(request), PEER_ACK_TIMEOUT_S)

    def _pool(self, url: str) -> tuple[ConnectionPool, bytes]:
        entry = self._pools.get(url)
        if entry is None:
            host, port = host_port(url)
            head = (
                f"POST {peer.PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"X-Exdr-Peer-Token: {self._token}\r\nContent-Type: application/json\r\n"
                "Content-Length: "
            ).encode()
            entry = self._pools[url] = (ConnectionPool(host, port, 1), head)
        return entry
