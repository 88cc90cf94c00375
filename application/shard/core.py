"""A shard's state: the hot engine, where its WAL stands, and how its events decode.

The shard application is built in layers, one concern a module: this state, checkpoints,
recovery, batches of commands, the standby's apply; `application.shard.app` joins them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Mapper, Transcoder

from application.ports import WalStore
from application.recovery.replay import decoder_for
from application.shard.keys import IdempotencyKeys
from application.wal.auth import ReplicationKeys
from application.wal.records import GENESIS, RecordedEvent, WalRecord
from application.wal.transcoding import DomainMapper, TypedJSONTranscoder
from domain.engine import ShardEngine
from domain.errors import UnknownOrder
from domain.order import Order
from domain.values import Instrument

if TYPE_CHECKING:
    from application.shard.checkpoints import BackgroundCheckpoint


class ShardCore(Application[UUID]):
    """The state every layer of the shard application shares, and the reads over it."""

    def __init__(
        self,
        shard_id: str,
        instruments: Sequence[Instrument],
        *,
        env: Mapping[str, str] | None = None,
        epoch: int | None = None,
        checkpoint_every: int = 10_000,
        snapshot_every: int = 100,
        clock_us: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(env=env)
        store = self.recorder
        if not isinstance(store, WalStore):
            raise TypeError(f"recorder {type(store).__name__} does not keep a WAL")
        self.store: WalStore = store
        self.shard_id = shard_id
        self.instruments = tuple(instruments)
        self.checkpoint_every = checkpoint_every
        self.snapshot_every = snapshot_every
        self._clock_us = clock_us or (lambda: time.time_ns() // 1000)
        self._requested_epoch = epoch
        self.epoch = epoch or 1
        self.seq = 0
        self.durable_seq = 0
        self.engine = ShardEngine(shard_id, self.instruments)
        self.keys = IdempotencyKeys(store, shard_id)
        self.needs_recovery = True
        # a witness's copy: the WAL stored and verified, no hot state (recovery reads the head,
        # the standby's apply stores without applying, no checkpoints); it never leads
        self.log_only = False
        self.events_written = 0
        # records are signed with the regions' key when one is set (infra/bootstrap.py), and
        # each names the checksum of the one before it: this is the last one's
        self.replication_keys: ReplicationKeys | None = None
        self.chain_checksum: str | None = GENESIS
        self.last_applied_at_us = 0
        # the domain events of the last append_replicated call, by seq (for indexes that
        # follow replication without decoding the records a second time)
        self.replicated_events: dict[int, list[Aggregate.Event]] = {}
        # Checkpoints off the writer's path: called with the state durable at self.seq, it
        # captures and stores a checkpoint elsewhere (infra/checkpoints/checkpointer.py
        # forks) and says whether it did; None (or False) captures inline, stalling the
        # writer meanwhile.
        self.background_checkpoint: BackgroundCheckpoint | None = None
        self.checkpoint_due = False
        # Called (writer thread) after each recovery with the recovered seq: in-memory indexes
        # kept beside the hot state drop what they took from commands beyond it, which did
        # not land (their batch failed, or was set aside when this region rejoined).
        self.on_recovered: Callable[[int], None] | None = None

    def construct_mapper(self) -> Mapper[UUID]:
        """Stored topics are looked up among our own types, never imported."""
        return self.factory.mapper(
            transcoder=self.construct_transcoder(), mapper_class=DomainMapper
        )

    def construct_transcoder(self) -> Transcoder:
        """Enums and tuples must come back as they went in, or replay would diverge."""
        transcoder = TypedJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def enable_key_filter(self) -> None:
        """Keep the idempotency key filter (the shard's writer does; one-off tools need not):
        loaded behind every recovery, from now on if the state is already recovered."""
        self.keys.enable_filter(None if self.needs_recovery else self.seq)

    # -- queries ----------------------------------------------------------------------------

    def find_order(self, order_id: UUID) -> Order | None:
        """An open order from memory, a closed one from the event store; None where the store
        no longer holds its events from its placement on (archived with their records)."""
        live = self.engine.order(order_id)
        if live is not None:
            return live
        try:
            return cast(Order, self.repository.get(order_id))
        except AggregateNotFoundError:
            return None
        except (AssertionError, AttributeError):
            # the stream starts after a Created event: its first events left with their
            # archived records (eventsourcing asserts on a first event that is not a creation)
            return None

    def order_after(self, order_id: UUID, records: Sequence[WalRecord]) -> Order | None:
        """The order as the records left it, from its events in them alone (the records must
        hold its placement: the first outcome of a placement, rebuilt from its own record)."""
        order: Order | None = None
        for record in records:
            for recorded in record.events:
                if recorded.originator_id == order_id:
                    order = cast(Order, self.decode_event(recorded).mutate(order))
        return order

    def get_order(self, order_id: UUID) -> Order:
        order = self.find_order(order_id)
        if order is None:
            raise UnknownOrder(f"order {order_id} does not exist in shard {self.shard_id}")
        return order

    # -- decoding ---------------------------------------------------------------------------

    def decode_record(self, record: WalRecord) -> list[Aggregate.Event]:
        """A verified WAL record's domain events, in order."""
        return [self.decode_event(recorded) for recorded in record.events]

    def decode_event(self, recorded: RecordedEvent) -> Aggregate.Event:
        """One recorded event as its domain event (the replay decoder, not the mapper's path)."""
        return cast(
            Aggregate.Event,
            decoder_for(self.mapper).decode(
                recorded.originator_id,
                recorded.originator_version,
                recorded.topic,
                recorded.state,
            ),
        )
