"""The peer lane: what one region's node says to another's, below the public API.

- POST /internal/wal/{shard}: a leader's run of committed records
  (infra/replication/peer_link.py). The standby stores it and answers 200 with its
  confirmation {"shard", "region", "seq", "epoch"};
  409 when it is not a standby of that shard.
- POST /internal/standby-ack: a standby's confirmation of records that reached it through the
  broker. Through the acks topic a confirmation costs a produce, a fetch and the consumer's
  hand-over on the leader (about 13 ms here, most of it the broker's fetch wait); here it is
  one small request. The topic stays: whichever arrives first releases the waiters, and a
  confirmation only ever moves a shard's confirmed seq forward.

A forged confirmation would let the leader acknowledge commands the standby does not have, and
forged records would be checked (checksums, epochs) but still cost the standby work, so the
lane exists only when both regions share EXDR_PEER_TOKEN, and it refuses any request without
that token (compared in constant time).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from infra.api.errors import Receive, Scope, Send, send_json_body
from infra.replication.peer_link import WAL_PATH

log = logging.getLogger("exchange_dr.api.peer")

PATH = "/internal/standby-ack"
TOKEN_HEADER = b"x-exdr-peer-token"
MAX_BODY = 4096
MAX_WAL_BODY = 64 << 20
WAL_TIMEOUT_S = 10.0

Confirmation = dict[str, Any]
TakeRecords = Callable[[str, bytes], Awaitable[Confirmation | None] | None]
"""(shard, body) -> the standby's confirmation once stored; None (or an awaitable of None)
when this region is not a standby of the shard. Raises KeyError for an unknown shard."""


class PeerAckLane:
    """Takes standby confirmations for `accept` and, given `take_records`, record runs."""

    def __init__(
        self,
        token: str,
        accept: Callable[[Confirmation], None],
        take_records: TakeRecords | None = None,
    ) -> None:
        if not token:
            raise ValueError("a peer token is required")
        self._token = token.encode()
        self._accept = accept
        self._take_records = take_records

    def takes(self, scope: Scope) -> bool:
        if scope["type"] != "http":
            return False
        path = scope["path"]
        return bool(
            path == PATH or (self._take_records is not None and path.startswith(WAL_PATH))
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wal = scope["path"] != PATH
        limit = MAX_WAL_BODY if wal else MAX_BODY
        chunks: list[bytes] = []
        size = 0
        more = True
        while more and size <= limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        status = self._check(scope, size, more, limit)
        answer = b""
        if status == 0 and wal:
            status, answer = await self._records(scope["path"][len(WAL_PATH) :], body)
        elif status == 0:
            status = self._confirmation(body)
        await send_json_body(send, status, answer)

    def _check(self, scope: Scope, size: int, more: bool, limit: int) -> int:
        if scope["method"] != "POST":
            return 405
        token = dict(scope["headers"]).get(TOKEN_HEADER, b"")
        if not hmac.compare_digest(token, self._token):
            return 403
        if more or size > limit:
            return 413
        return 0

    def _confirmation(self, body: bytes) -> int:
        try:
            ack = orjson.loads(body)
            if not isinstance(ack, dict):
                raise ValueError("not an object")
            int(ack["seq"]), int(ack.get("epoch", 0)), str(ack["shard"])
        except (ValueError, TypeError, KeyError):
            return 400
        try:
            self._accept(ack)
        except Exception:  # a confirmation that cannot be taken is a confirmation not given
            log.exception("standby confirmation failed")
            return 503
        return 204

    async def _records(self, shard: str, body: bytes) -> tuple[int, bytes]:
        assert self._take_records is not None
        try:
            pending = self._take_records(shard, body)
            ack = await asyncio.wait_for(pending, WAL_TIMEOUT_S) if pending is not None else None
        except KeyError:
            return 404, b""
        except Exception as exc:  # not stored: the leader's link drops the run, the topic has it
            log.error("peer records not stored shard=%s error=%s", shard, exc)
            return 503, b""
        if ack is None:
            return 409, b""
        return 200, orjson.dumps(ack)
