"""The projector worker: a Faust agent over the shards' WAL topics feeding ReadModelProjector.

Kafka is the low-latency path only. Every message is verified (`WalRecord.from_wire`); a corrupt
one is never applied: a critical line names its shard and seq and the record is read from the
region's store instead. Records are taken in batches (500 or 10 ms) and each shard's part of a
batch commits in one transaction with its tracking row; all database work runs on one thread.

The relay publishes a record right after its local commit, before any follower stored it, so the
topic carries records a failover can still take back (a deposed leader's tail). The worker
projects only up to the shard's confirmed point, which the region's node records in the same
database (`wal_confirmed`); records beyond it are held until it moves, and what is projected must
chain from the tracking row and end at the confirmed record's checksum.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from application.wal.auth import RejectedError, ReplicationKeys
from application.wal.records import WALCorruptionError, WalRecord
from projections.app import make_faust_app
from projections.kafka_auth import aiokafka_security
from projections.read_models.confirmed import ConfirmedPoint, read_confirmed
from projections.read_models.projector import ReadModelProjector, StoreBehindError
from projections.settings import BrokerSettings
from projections.topics import wal_topic_name

log = logging.getLogger("exchange_dr.projections")

BATCH_MAX = 500
BATCH_WITHIN_S = 0.01
RETRY_EVERY_S = 0.05  # held records wait for the confirmed point: look for it this often
STREAM_IDLE_S = 1.0  # no delivery for this long: the store gives what the point allows


def projector_group(prefix: str, region: str) -> str:
    """Consumer group (and Faust app id) of a region's projectors."""
    return f"{prefix}.projections.{region}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One decoded message: a verified record, or the place of a corrupt one."""

    shard_id: str
    seq: int
    record: WalRecord | None


def decode_deliveries(
    value: bytes | str | None, keys: ReplicationKeys | None = None
) -> list[Delivery]:
    """Verify one broker message: a wire record, or {"records": [...]} with a run of them
    (what the relay sends), each with its checksum and, given `keys`, its MAC. Corruption is
    logged critical and returned as a hole."""
    try:
        data = orjson.loads(value) if value is not None else None
    except ValueError as exc:
        return [_hole(WALCorruptionError("?", -1, f"message is not JSON: {exc}"))]
    run = data.get("records") if isinstance(data, dict) else None
    if isinstance(run, list):
        return [_delivery(item, keys) for item in run]
    return [_delivery(data, keys)]


def _delivery(data: object, keys: ReplicationKeys | None) -> Delivery:
    try:
        if not isinstance(data, dict):
            raise WALCorruptionError("?", -1, "message is not a JSON object")
        record = WalRecord.from_wire(data)
        if keys is not None:
            try:
                keys.verify_record(record.checksum, record.mac)
            except RejectedError as exc:
                raise WALCorruptionError(record.shard_id, record.seq, str(exc)) from None
    except (ValueError, WALCorruptionError) as exc:
        return _hole(exc)
    return Delivery(record.shard_id, record.seq, record)


def _hole(exc: Exception) -> Delivery:
    shard = getattr(exc, "shard_id", "?")
    seq = int(getattr(exc, "seq", -1))
    log.critical(
        "corrupt WAL record from Kafka: shard=%s seq=%s (%s); not applied, "
        "reading it from the store",
        shard,
        seq,
        exc,
    )
    return Delivery(str(shard), seq, None)


@dataclass
class ProjectorWorker:
    """Holds what the agent needs between batches: the projector and records a gap kept back."""

    projector: ReadModelProjector
    shards: tuple[str, ...]
    held: dict[str, dict[int, WalRecord]] = field(default_factory=lambda: defaultdict(dict))
    seen: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    tracked: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    applied: int = 0
    confirmed: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # last read
    waiting: dict[str, str] = field(default_factory=dict)  # why a shard waits (logged once)
    delivered_at: dict[str, float] = field(default_factory=lambda: defaultdict(time.monotonic))
    streaming: bool = False  # the group joined: from here an idle stream means nothing to bring

    def joined(self) -> None:
        """The consumer group has its partitions: idleness counts from now."""
        self.streaming = True
        for shard in self.shards:
            self.delivered_at[shard] = time.monotonic()

    def confirmed_point(self, shard: str) -> ConfirmedPoint | None:
        """The shard's confirmed point as the region's node recorded it."""
        point = read_confirmed(self.projector.sessions, shard)
        self.confirmed[shard] = 0 if point is None else point.seq
        return point

    def apply_deliveries(self, deliveries: Iterable[Delivery]) -> None:
        """Apply a batch, per shard in one transaction each (runs on the database thread)."""
        touched: set[str] = set()
        for d in deliveries:
            if d.shard_id not in self.shards:
                if d.record is not None:
                    log.error("record of unconfigured shard %s seq %s ignored", d.shard_id, d.seq)
                continue
            touched.add(d.shard_id)
            self.delivered_at[d.shard_id] = time.monotonic()
            seq = d.seq
            if d.record is None and seq > self.seen[d.shard_id]:
                # a hole says nothing verified: how far the shard goes is the store's word
                seq = min(seq, self.projector.store.head(d.shard_id).seq)
            self.seen[d.shard_id] = max(self.seen[d.shard_id], seq)
            if d.record is not None:
                self.held[d.shard_id][d.seq] = d.record
        for shard in sorted(touched):
            self._apply(shard)

    def retry_pending(self) -> None:
        """Apply what the confirmed point allows: records held for it, or waiting for the
        store. The point is polled: it moves with the followers' confirmations, not with the
        stream. The stream, not the store, brings the records while it flows (a broken Kafka
        path shows up as lag); once it has been idle for STREAM_IDLE_S (after a restart the
        records up to the point may have been consumed already) the store gives them."""
        now = time.monotonic()
        for shard in self.shards:
            idle = self.streaming and now - self.delivered_at[shard] >= STREAM_IDLE_S
            self._apply(shard, idle=idle)

    def _apply(self, shard: str, *, idle: bool = False) -> None:
        held = self.held[shard]
        try:
            point = self.confirmed_point(shard)
            if point is None:
                return  # the node has confirmed nothing yet: everything is held
            if point.seq == self.tracked[shard]:
                return  # everything confirmed is applied; what is seen beyond it is held
            if point.seq > self.seen[shard] and not idle:
                return  # the stream has not brought the confirmed records yet
            ready = [r for s, r in held.items() if s <= point.seq]
            report = self.projector.apply(shard, ready, through=point.seq, end=point)
        except StoreBehindError as exc:
            if self.waiting.get(shard) != str(exc):  # polled every 50 ms: said once
                self.waiting[shard] = str(exc)
                log.warning("projection waits for the store: %s", exc)
            tracked = self.projector.tracked(shard)
        except Exception:
            # kept in memory and retried; the views stay exactly at their tracking row
            log.exception("projection of shard %s failed; will retry", shard)
            return
        else:
            tracked = report.tracked
            self.applied += report.applied
            self.waiting.pop(shard, None)
        self.tracked[shard] = tracked
        for seq in [s for s in held if s <= tracked]:
            del held[seq]


async def ensure_wal_topics(settings: BrokerSettings, shards: Sequence[str]) -> None:
    """Create missing shard topics with ONE partition each (order per shard)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **aiokafka_security(settings.kafka_security)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        names = [wal_topic_name(settings.topic_prefix, s) for s in shards]
        wanted = [name for name in names if name not in existing]
        if wanted:
            await admin.create_topics([NewTopic(name, 1, 1) for name in wanted])
    finally:
        await admin.close()


def build_projector_app(
    settings: BrokerSettings, worker: ProjectorWorker, *, region: str, started: float | None = None
) -> faust.App:
    """The Faust app of a region's projector for the worker's shards."""
    begun = time.monotonic() if started is None else started
    group = projector_group(settings.topic_prefix, region)
    app = make_faust_app(settings, group)
    topic = app.topic(
        *[wal_topic_name(settings.topic_prefix, s) for s in worker.shards],
        key_serializer="raw",
        value_serializer="raw",
        partitions=1,
    )
    database = ThreadPoolExecutor(1, thread_name_prefix="projector-db")
    keys = settings.replication_keys()

    async def on_database(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(database, fn, *args)

    @app.agent(topic, name="project_wal_records")
    async def project_wal_records(stream: Any) -> None:
        async for values in stream.take(BATCH_MAX, within=BATCH_WITHIN_S):
            deliveries = [d for v in values for d in decode_deliveries(v, keys)]
            await on_database(worker.apply_deliveries, deliveries)

    @app.on_partitions_assigned.connect
    async def joined(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", ())
        worker.joined()
        log.warning(
            "projector group %s joined in %.2f s (%s partitions)",
            group,
            time.monotonic() - begun,
            len(assigned),
        )

    async def retry_waiting_shards() -> None:
        while not app.should_stop:
            await asyncio.sleep(RETRY_EVERY_S)
            try:
                await on_database(worker.retry_pending)
            except Exception:
                log.exception("projector retry failed; trying again")

    app.task(retry_waiting_shards)
    return app
