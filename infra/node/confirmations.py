"""A standby's confirmations (every record up to seq is stored in its region) and the leader's
handling of them: the acks topic (always), a direct request on the peer link (the fast path)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from application.wal.auth import RejectedError
from infra.api import peer
from infra.node.node import Node
from infra.replication.peer_link import host_port
from infra.replication.peer_server import client_context, peer_url_of_api
from infra.replication.rawhttp import ConnectionPool

PEER_ACK_TIMEOUT_S = 0.5

log = logging.getLogger("exchange_dr.node")


def accept_standby_ack(node: Node, ack: dict[str, Any], *, path: str = "broker") -> None:
    """A standby's confirmation (from the acks topic, its direct request or the peer link's
    answer): every record up to ack["seq"] is stored in its region. Counted only if it is
    signed, of this epoch and names this leader's own record at that seq
    (application/replication/confirmation.py), and skipped only if its own region confirmed
    as much already: a slower follower's seqs below the majority's still tell how far it is
    (`gate.stored_on`, which a switchover and the archive wait for). Thread-safe (the gate
    locks)."""
    shard_id = ack.get("shard") if isinstance(ack, dict) else None
    controller = node.controllers.get(shard_id) if isinstance(shard_id, str) else None
    if controller is None or ack.get("region") == node.region.name:
        return
    if not controller.role.leads:
        return
    app = controller.app
    try:
        seq = node.ack_checks[controller.shard_id].verify(
            ack, head_seq=app.seq, epoch=app.epoch, confirmed=controller.gate.stored_on
        )
    except RejectedError as exc:
        claimed = ack.get("seq")
        message = (
            f"standby confirmation refused ({exc.reason.value}): shard {controller.shard_id} "
            f"seq {claimed!r} from {path}; not counted"
        )
        log.critical("%s (region=%r: %s)", message, ack.get("region"), exc.detail)
        if node.rejection_alerts is not None:
            node.rejection_alerts(
                "ConfirmationRejected",
                message,
                {
                    "shard": controller.shard_id,
                    "seq": claimed if type(claimed) is int else "?",
                    "reason": exc.reason.value,
                    "source": path,
                },
            )
        return
    if seq is None:
        return  # confirmations of an older epoch, or of what its region confirmed already
    node.confirmations[path] = node.confirmations.get(path, 0) + 1
    controller.gate.standby_stored(seq, str(ack.get("region", "")))


def wire_acks(node: Node, acks_topic: Any) -> None:
    @node.faust_app.agent(acks_topic)
    async def standby_confirmed(stream: Any) -> None:
        async for value in stream:
            try:
                ack = orjson.loads(value)
            except ValueError:
                ack = None
            if isinstance(ack, dict):
                accept_standby_ack(node, ack)
            else:
                log.critical("standby confirmation refused (malformed) from broker")


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
            host, port = host_port(peer_url_of_api(self.node.settings, url))
            head = (
                f"POST {peer.PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"X-Exdr-Peer-Token: {self._token}\r\nContent-Type: application/json\r\n"
                "Content-Length: "
            ).encode()
            pool = ConnectionPool(host, port, 1, client_context(self.node.settings))
            entry = self._pools[url] = (pool, head)
        return entry
