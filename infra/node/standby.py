"""A standby's intake of one shard: the Faust agent over the shard's topic, the peer link's
pushed runs, and a periodic catch-up from the leader's store; each applied run is confirmed."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import Future
from typing import Any

import orjson

from application.replication.sync_gate import ReplicationMode
from infra.failover.controller import ShardController
from infra.failover.state import Role
from infra.node.confirmations import PeerConfirmer
from infra.node.node import Node

log = logging.getLogger("exchange_dr.node")

QUERY_TIMEOUT_S = 10.0  # a writer-thread call that takes longer is logged, never waited on forever
MAX_APPLY_MESSAGES = 500  # broker messages (each a run of records) per apply on a standby


def wire_standby(node: Node, controller: ShardController, topic: Any, acks_topic: Any) -> None:
    shard_id = controller.shard_id
    writer = controller.writer
    replicator = controller.replicator

    def _apply(values: list[Any], _: object, source: str = "broker") -> tuple[int, str | None]:
        seq = replicator.apply_wire(values, source=source)
        _index(seq)
        return seq, writer.app.chain_checksum  # read together, on the writer thread

    def _catch_up(_: object) -> tuple[int, str | None]:
        seq = replicator.catch_up(everything=False)
        _index(seq)
        return seq, writer.app.chain_checksum

    def _index(seq: int) -> None:
        facade = getattr(getattr(node.api_app, "state", None), "facade", None)
        if facade is None or writer.app.log_only:
            return
        activity = facade.activity[shard_id]
        if activity.seq >= seq:
            return
        applied = replicator.last_applied
        if applied and applied[0].seq <= activity.seq + 1:
            # what was just stored and applied: no read back, no second decoding
            activity.index_records(writer.app, applied, writer.app.replicated_events)
        else:
            activity.index_records(
                writer.app, writer.app.store.iter_records(shard_id, activity.seq, upto_seq=seq)
            )

    # direct confirmations only where acknowledgements wait for them (configured sync mode)
    token = node.settings.peer_token
    sync = node.settings.replication_mode == ReplicationMode.SYNC
    direct = PeerConfirmer(node, shard_id, token) if token and sync else None

    keys = node.keys
    assert keys is not None

    def confirmation(seq: int, checksum: str | None) -> dict[str, Any]:
        """Signed: `seq` and the checksum of the record stored there."""
        return keys.confirmation(
            shard_id,
            node.region.name,
            controller.confirmation_epoch(),
            seq,
            checksum or "",
            at_us=time.time_ns() // 1000,
        )

    async def confirm(seq: int, checksum: str | None) -> None:
        ack = confirmation(seq, checksum)
        if direct is not None:
            direct.offer(ack)  # the fast path; the topic is the one that always works
        await acks_topic.send(key=shard_id.encode(), value=orjson.dumps(ack))

    def _apply_pushed(body: bytes, app: Any) -> dict[str, Any] | None:
        if controller.role is not Role.STANDBY:
            return None
        return confirmation(*_apply([body], app, source="peer"))

    def take_pushed(body: bytes) -> Future[dict[str, Any] | None] | None:
        """A run from the leader's peer link (any thread): the future of its confirmation, due
        once the run is stored; None if this region is not a standby of the shard."""
        if controller.role is not Role.STANDBY:
            return None
        return writer.query(functools.partial(_apply_pushed, body))

    node.intakes[shard_id] = take_pushed

    # Deliveries are batched by what arrives while the writer applies the previous batch: no
    # timer (Faust's take(within=...) wakes every `within` even when nothing comes, which on a
    # quiet standby cost a steady share of a core and added its period to every record's lag).
    arrived: list[Any] = []
    wake = asyncio.Event()

    async def apply_arrived() -> None:
        while True:
            await wake.wait()
            wake.clear()
            await asyncio.sleep(0)  # the rest of a fetch that is being delivered joins in
            values = arrived[:MAX_APPLY_MESSAGES]
            del arrived[: len(values)]
            if arrived:
                wake.set()
            if controller.role is not Role.STANDBY:
                continue
            # what the peer link already brought is dropped here, without the writer's time
            values = replicator.unseen(values)
            if not values:
                continue
            try:
                seq, checksum = await asyncio.wait_for(
                    asyncio.wrap_future(writer.query(functools.partial(_apply, values))),
                    QUERY_TIMEOUT_S,
                )
            except Exception as exc:
                # the records stay unapplied; catch_up pulls them from the leader's store
                log.error("replication failed shard=%s error=%s", shard_id, exc)
                continue
            await confirm(seq, checksum)

    @node.faust_app.agent(topic)
    async def replicate(stream: Any) -> None:
        # offsets may run ahead of what is applied: the store's seq, not the consumer's
        # offset, says what the standby has (a restart catches up from the leader's store)
        applier = asyncio.ensure_future(apply_arrived())
        try:
            async for value in stream:
                if controller.role is Role.STANDBY:
                    arrived.append(value)
                    wake.set()
        finally:
            applier.cancel()

    @node.faust_app.timer(0.5)  # type: ignore[untyped-decorator]
    async def catch_up() -> None:
        # a broker that lost its topics, or a quiet leader: the store is the source of truth
        if controller.role is not Role.STANDBY or node.coordinator is None:
            return
        if node.coordinator.leader(shard_id) is None:
            return  # nobody to copy from; the failover manager decides
        try:
            seq, checksum = await asyncio.wait_for(
                asyncio.wrap_future(writer.query(_catch_up)), QUERY_TIMEOUT_S
            )
        except Exception as exc:
            log.warning("catch-up from the leader's store failed shard=%s error=%s", shard_id, exc)
            return
        if seq:
            await confirm(seq, checksum)
