"""Read barriers: a response shows only state a majority of replicas holds, or says it does not.

`Facade.query` reads on the writer thread and takes the seq S of the state it read there; it
then asks the facade's ReadConfirmation (application/read_confirmation.py) whether S is
confirmed, waiting at most the shard's sync timeout (Raft's ReadIndex). A confirmed read is
marked on the request's `ReadStamp`; an unconfirmed one is refused (503 `unconfirmed`, strict
policy) or marked unconfirmed. `ReadStampMiddleware` turns the stamp into the response headers
`X-Exdr-Seq` and `X-Exdr-State`, so no route builds them itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from application.replication.sync_gate import ReplicationMode, SyncGate, SyncPolicy
from application.wal.writer import ShardWriter
from infra.api.errors import ASGIApp, Message, Receive, Scope, Send

SEQ_HEADER = b"x-exdr-seq"
STATE_HEADER = b"x-exdr-state"
CONFIRMED = "confirmed"
UNCONFIRMED = "unconfirmed"


async def gate_confirms(gate: SyncGate, seq: int, *, wait: bool = True) -> bool:
    """Whether a majority of the shard's replicas holds `seq`, as the leader's gate knows it;
    with `wait`, waits for it at most the gate's timeout (in async mode, not at all)."""
    if gate.confirms(seq):
        return True
    if not wait:
        return False
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bool] = loop.create_future()

    def resolve(ok: bool) -> None:
        # from whichever thread passed the confirmation on (the peer lane, the broker's
        # consumer): never an error there, even if this facade's loop is gone meanwhile
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, answer, ok)

    cancel = gate.when_confirmed(seq, resolve)
    try:
        return await asyncio.wait_for(answer, gate.timeout_s)
    except TimeoutError:
        return False
    finally:
        cancel()


def _settle(answer: asyncio.Future[bool], ok: bool) -> None:
    if not answer.done():
        answer.set_result(ok)


def refuses_unconfirmed(gate: SyncGate) -> bool:
    """Sync mode under the strict policy shows nothing a majority does not hold; degrade and
    async answer, labelled unconfirmed."""
    return gate.mode is ReplicationMode.SYNC and gate.policy is SyncPolicy.STRICT


class WriterGateReads:
    """ReadConfirmation of a facade whose writers lead their shards without a node (`serve`,
    tests): a writer with a sync gate confirms what a majority holds; a writer without one is
    the only copy, so what it committed is all there is."""

    def __init__(self, writers: Mapping[str, ShardWriter]) -> None:
        self._writers = writers

    async def confirm(self, shard_id: str, seq: int, *, wait: bool = True) -> bool:
        gate = self._writers[shard_id].gate
        return True if gate is None else await gate_confirms(gate, seq, wait=wait)

    def refuses_unconfirmed(self, shard_id: str) -> bool:
        gate = self._writers[shard_id].gate
        return gate is not None and refuses_unconfirmed(gate)


@dataclass
class ReadStamp:
    """What one request's reads showed: each shard's seq, and whether all were confirmed."""

    seqs: dict[str, int] = field(default_factory=dict)
    confirmed: bool = True

    def add(self, shard_id: str, seq: int, confirmed: bool) -> None:
        self.seqs[shard_id] = max(seq, self.seqs.get(shard_id, 0))
        self.confirmed = self.confirmed and confirmed

    def headers(self) -> list[tuple[bytes, bytes]]:
        if not self.seqs:
            return []
        if len(self.seqs) == 1:
            seq = str(next(iter(self.seqs.values())))
        else:  # seqs of different shards are not comparable: one per shard
            seq = ", ".join(f"{shard}={s}" for shard, s in self.seqs.items())
        state = CONFIRMED if self.confirmed else UNCONFIRMED
        return [(SEQ_HEADER, seq.encode()), (STATE_HEADER, state.encode())]


_STAMP: contextvars.ContextVar[ReadStamp | None] = contextvars.ContextVar(
    "exdr_read_stamp", default=None
)


def stamp_read(shard_id: str, seq: int, confirmed: bool) -> None:
    """Mark the current request's response (outside a request: nothing to mark)."""
    stamp = _STAMP.get()
    if stamp is not None:
        stamp.add(shard_id, seq, confirmed)


class ReadStampMiddleware:
    """Gives each read (GET, HEAD) a ReadStamp and adds its headers to the response it sends.
    A command's answer is not stamped: its acknowledgement already waited for a majority,
    and the read some commands make first (a cancel looks its order up) is not its state."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        stamp = ReadStamp()
        token = _STAMP.set(stamp)

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = stamp.headers()
                if extra:
                    message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        finally:
            _STAMP.reset(token)


READ_HEADERS: dict[str, dict[str, Any]] = {
    "X-Exdr-Seq": {
        "description": "The WAL seq of the state shown: one number when one shard was read, "
        "`shard=seq` pairs (comma-separated) when several were",
        "schema": {"type": "string"},
    },
    "X-Exdr-State": {
        "description": "`confirmed`: a majority of the shard's replicas holds that state, no "
        "failover can take it back. `unconfirmed`: it may still be taken back (degrade policy "
        "or async mode; under the strict policy such a read answers 503 `unconfirmed`)",
        "schema": {"type": "string", "enum": [CONFIRMED, UNCONFIRMED]},
    },
}


def document_read_headers(schema: dict[str, Any]) -> dict[str, Any]:
    """List the read headers on every successful answer of a read (GET under /v1/) in an
    OpenAPI description."""
    for path, operations in schema.get("paths", {}).items():
        read = operations.get("get") if path.startswith("/v1/") else None
        if read is None:
            continue
        for status, response in read.get("responses", {}).items():
            if str(status).startswith("2"):
                response.setdefault("headers", {}).update(READ_HEADERS)
    return schema
