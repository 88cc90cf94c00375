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
that token (compared in constant time) from its head alone: 401 and the connection closed
before one byte of the body is read, so an unauthenticated caller cannot make the lane
buffer its 64 MiB. A declared length above the limit is refused the same way (413). With
EXDR_PEER_URLS the lane has a listener of its own, TLS with both ends' certificates checked
(infra/replication/peer_server.py); the token then travels only inside TLS.
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
        return bool(path == PATH or (self._take_records is not None and path.startswith(WAL_PATH)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wal = scope["path"] != PATH
        limit = MAX_WAL_BODY if wal else MAX_BODY
        status = self._check_head(scope, limit)
        if status:
            await _refuse(send, status)  # the body stays unread: the connection closes
            return
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
        if more or size > limit:  # a chunked body that outgrew the limit
            await _refuse(send, 413)
            return
        body = b"".join(chunks)
        answer = b""
        if wal:
            status, answer = await self._records(scope["path"][len(WAL_PATH) :], body)
        else:
            status = self._confirmation(body)
        await send_json_body(send, status, answer)

    def _check_head(self, scope: Scope, limit: int) -> int:
        """A refusal decided from the request line and headers, before any body: 0 if none."""
        if scope["method"] != "POST":
            return 405
        headers = dict(scope["headers"])
        if not hmac.compare_digest(headers.get(TOKEN_HEADER, b""), self._token):
            log.warning(
                "peer lane refused a request without the peer token from %s",
                (scope.get("client") or ("-",))[0],
            )
            return 401
        length = headers.get(b"content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > limit):
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


async def _refuse(send: Send, status: int) -> None:
    """An empty answer that closes the connection: what the caller still sends is not read."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", b"0"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": b""})
