"""The shard application: one writer, one dense WAL, hot in-memory state, recovery."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder

from application.checkpoints.checkpoint import decode_state, encode_state, is_columnar
from application.ports import StoredCheckpoint, WalStore
from application.recovery.replay import chain_start, decoder_for, raw_pages, replay_rows
from application.shard.keyfilter import KeyFilter
from application.wal.auth import ReplicationKeys
from application.wal.chain import ChainCursor
from application.wal.records import (
    GENESIS,
    RecordedEvent,
    WALCorruptionError,
    WALGapError,
    WalRecord,
    iter_payload,
)
from application.wal.registry import UnknownTypeError
from application.wal.transcoding import DomainMapper, TypedJSONTranscoder, plain_form
from domain.account import Account
from domain.commands import Command, Deposit, PlaceOrder
from domain.engine import CommandResult, ShardEngine
from domain.errors import DomainError, UnknownOrder
from domain.order import Order
from domain.values import Instrument

log = logging.getLogger("exchange_dr.shard")

ProgressFn = Callable[[int, int], None]


class CommandFailedError(Exception):
    """A command whose batch could not be committed: it was not applied, the client may retry."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a committed (or already committed) command produced."""

    seq: int
    command: Command
    result: CommandResult | None
    order: Order | None
    duplicate: bool = False
    differs: bool = False  # a duplicate whose command is not the one first stored under its key


Presenter = Callable[[Outcome], Any]


@dataclass(slots=True)
class PreparedBatch:
    """Commands executed in memory, sealed as WAL records, waiting for their commit."""

    results: list[Any]
    first_seq: int
    records: list[WalRecord] = field(default_factory=list)
    stored: list[StoredEvent] = field(default_factory=list)
    snapshots: list[StoredEvent] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    checkpoint: StoredCheckpoint | None = None
    committed: bool = False
    failed: bool = False
    ack_seq: int = 0  # the highest seq any outcome depends on (what sync mode waits for)


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What a recovery or replay did, for operators and benchmarks."""

    shard_id: str
    from_checkpoint_seq: int
    records: int
    events: int
    seconds: float
    seq: int
    state_hash: str
    checkpoint_hash_matches: bool | None


class BackgroundCheckpoint(Protocol):
    """Takes a checkpoint of an app whose state is durable at its seq, away from the writer."""

    def __call__(self, app: ShardApp) -> bool:
        """Start it; False if it cannot (the app then captures inline)."""

    def wait(self, timeout_s: float) -> None:
        """Wait for the ones still running."""


class ShardApp(Application[UUID]):
    """Per-shard event-sourced application: commands in, WAL records and aggregate events out."""

    name = "Exchange"
    is_snapshotting_enabled = True

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
        self._recent_keys: OrderedDict[str, int] = OrderedDict()
        self._recent_keys_max = 200_000
        # keys stored since the last recovery, and (once loaded behind it) every older one
        self._new_keys = KeyFilter()
        self._stored_keys: KeyFilter | None = None
        self._keys_generation = 0
        self._keys_lock = threading.Lock()
        self._key_filter_on = False
        self.needs_recovery = True
        self.events_written = 0
        # records are signed with the regions' key when one is set (infra/bootstrap.py), and
        # each names the checksum of the one before it: this is the last one's
        self.keys: ReplicationKeys | None = None
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

    # -- commands ---------------------------------------------------------------------------

    def execute_batch(
        self,
        commands: Sequence[Command],
        presenters: Sequence[Presenter | None] | None = None,
    ) -> list[Any]:
        """Run commands in order and commit them in ONE transaction; each gets its own result.

        Domain errors belong to their command alone and write nothing. If the commit fails, every
        command of the batch fails with CommandFailedError and the hot state is rebuilt from the
        store on the next batch, because it ran ahead of what is durable.
        """
        batch = self.prepare(commands, presenters)
        self.commit(batch)
        return batch.results

    def prepare(
        self,
        commands: Sequence[Command],
        presenters: Sequence[Presenter | None] | None = None,
    ) -> PreparedBatch:
        """Execute commands in memory and seal their WAL records; nothing is durable yet.

        The hot state runs ahead of the store until `commit`. `presenters[i](outcome)` runs right
        after command i, so a response shows the aggregates exactly as that command left them.
        """
        if self.needs_recovery:
            self.recover()
        results: list[Any] = [None] * len(commands)
        keys = [command_key(self.shard_id, command) for command in commands]
        known = self._known_keys(keys)
        batch = PreparedBatch(results=results, first_seq=self.seq + 1)
        recorded_at_us = self._clock_us()
        for index, command in enumerate(commands):
            present = presenters[index] if presenters is not None else None
            key = keys[index]
            if key is not None and key in known:
                batch.ack_seq = max(batch.ack_seq, known[key])
                outcome = self._duplicate_outcome(command, known[key], batch.records)
                results[index] = outcome if present is None else present(outcome)
                continue
            try:
                result = self.engine.execute(command)
            except DomainError as exc:
                results[index] = exc
                continue
            events: list[Any] = []
            for agg in result.touched:
                collected = agg.collect_events()
                events.extend(collected)
                if collected and agg.version % self.snapshot_every < len(collected):
                    batch.snapshots.append(self.mapper.to_stored_event(Snapshot.take(agg)))
            if not events:
                outcome = Outcome(self.seq, command, result, result.order)
                results[index] = outcome if present is None else present(outcome)
                continue
            self.seq += 1
            command_stored = [self.mapper.to_stored_event(event) for event in events]
            batch.stored.extend(command_stored)
            batch.records.append(
                WalRecord.seal(
                    shard_id=self.shard_id,
                    epoch=self.epoch,
                    seq=self.seq,
                    command_type=type(command).__name__,
                    command_key=key,
                    recorded_at_us=recorded_at_us,
                    events=[
                        RecordedEvent(
                            cast(UUID, s.originator_id), s.originator_version, s.topic, s.state
                        )
                        for s in command_stored
                    ],
                    prev_checksum=self.chain_checksum or GENESIS,
                    sign=None if self.keys is None else self.keys.sign_record,
                )
            )
            self.chain_checksum = batch.records[-1].checksum
            if key is not None:
                known[key] = self.seq
                self._remember_key(key, self.seq)
            outcome = Outcome(self.seq, command, result, result.order)
            results[index] = outcome if present is None else present(outcome)
            batch.pending.append(index)
            batch.ack_seq = self.seq
        if batch.records and self._crossed_checkpoint(batch.first_seq - 1):
            if self.background_checkpoint is None:
                batch.checkpoint = self.capture_checkpoint()
            else:
                self.checkpoint_due = True  # the writer takes it once this batch is durable
        return batch

    def commit(self, batch: PreparedBatch) -> None:
        """Make a prepared batch durable; on failure its commands get CommandFailedError."""
        if not batch.records:
            batch.committed = True
            return
        try:
            append = getattr(self.store, "append")  # noqa: B009 - the recorder's batch entry
            append(batch.stored, batch.records, epoch=self.epoch, prev_seq=batch.first_seq - 1)
        except Exception as exc:
            self.fail(batch, exc)
            return
        batch.committed = True
        self.durable_seq = batch.records[-1].seq
        self.events_written += len(batch.stored)
        if batch.snapshots and self.snapshots is not None:
            try:
                self.snapshots.recorder.insert_events(batch.snapshots)
            except Exception as exc:  # a snapshot is a cache: losing one costs speed, not data
                log.warning("snapshot write failed shard=%s error=%s", self.shard_id, exc)
        if batch.checkpoint is not None:
            self._save_checkpoint(batch.checkpoint)

    def fail(self, batch: PreparedBatch, exc: BaseException) -> None:
        """Mark a prepared batch as not durable: its commands fail, the hot state is rebuilt."""
        self.needs_recovery = True
        if batch.records:
            span = f"seq {batch.records[0].seq}..{batch.records[-1].seq}"
        else:
            span = "an empty batch"
        log.error(
            "batch commit failed shard=%s epoch=%s %s error=%s",
            self.shard_id,
            self.epoch,
            span,
            exc,
        )
        failure = CommandFailedError(
            f"shard {self.shard_id}: commit of {span} failed "
            f"({type(exc).__name__}: {exc}); nothing of it was applied"
        )
        for index in batch.pending:
            batch.results[index] = failure
        batch.failed = True

    def _known_keys(self, keys: Sequence[str | None]) -> dict[str, int]:
        recent = self._recent_keys
        known = {k: recent[k] for k in keys if k is not None and k in recent}
        missing = [k for k in keys if k is not None and k not in known]
        stored = self._stored_keys
        if missing and stored is not None:
            # only a key either filter may hold can have been used: ask the store for those
            new = self._new_keys
            missing = [k for k in missing if k in new or k in stored]
        if missing:
            known.update(self.store.find_command_keys(self.shard_id, missing))
        return known

    def _remember_key(self, key: str, seq: int) -> None:
        self._recent_keys[key] = seq
        self._new_keys.add(key)
        if len(self._recent_keys) > self._recent_keys_max:
            self._recent_keys.popitem(last=False)

    def _load_stored_keys(self, upto_seq: int) -> None:
        """Fill a filter with every key stored up to `upto_seq`, behind the writer's back;
        until it is in place every key not among the recent ones is looked up in the store."""
        with self._keys_lock:  # a loader of an older recovery must not install its filter
            self._keys_generation += 1
            generation = self._keys_generation
            self._new_keys = KeyFilter()
            self._stored_keys = None
        read = getattr(self.store, "command_keys", None)
        if read is None or not self._key_filter_on:
            return

        def load() -> None:
            loaded = KeyFilter(capacity=max(1 << 16, upto_seq))
            try:
                for key in read(self.shard_id, upto_seq):
                    loaded.add(key)
            except Exception as exc:  # the store answers each lookup instead: slower, correct
                log.warning(
                    "idempotency key filter not loaded shard=%s error=%s", self.shard_id, exc
                )
                return
            with self._keys_lock:
                if generation != self._keys_generation:
                    return
                self._stored_keys = loaded
            log.info("idempotency key filter loaded shard=%s upto_seq=%s", self.shard_id, upto_seq)

        threading.Thread(target=load, name=f"key-filter-{self.shard_id}", daemon=True).start()

    def enable_key_filter(self) -> None:
        """Keep the idempotency key filter (the shard's writer does; one-off tools need not):
        loaded behind every recovery, from now on if the state is already recovered."""
        self._key_filter_on = True
        if not self.needs_recovery:
            self._load_stored_keys(self.seq)

    def _duplicate_outcome(
        self, command: Command, seq: int, pending: Sequence[WalRecord] = ()
    ) -> Outcome:
        order: Order | None = None
        if isinstance(command, PlaceOrder):
            order = self.find_order(UUID(command_key(self.shard_id, command)))
        if isinstance(command, Deposit):
            account = self.engine.account(command.account)
            result = None if account is None else CommandResult(touched=(), account=account)
            differs = self._deposited_at(seq, pending) != command.amount
            return Outcome(seq, command, result, None, duplicate=True, differs=differs)
        return Outcome(seq, command, None, order, duplicate=True)

    def _deposited_at(self, seq: int, pending: Sequence[WalRecord]) -> Decimal | None:
        """The amount the deposit at `seq` credited (a retry is compared with it): from the
        batch being prepared if it is one of its records, else from the store."""
        records = [r for r in pending if r.seq == seq]
        for record in records or self.store.read_records(self.shard_id, seq - 1, 1):
            for event in self.decode_record(record):
                if isinstance(event, Account.Deposited):
                    return event.amount
        return None

    # -- replication (standby side) ---------------------------------------------------------

    def append_replicated(self, records: Sequence[WalRecord]) -> int:
        """Store verified records of the primary at their own seq and epoch, then apply them.

        `records` must follow the applied head densely (the caller fills gaps first). The
        store's head check refuses them if another writer moved the head or a newer epoch owns
        the shard; the head row is this standby's tracking position, written in the same
        transaction, so a record is stored exactly once. Returns the new applied seq.
        """
        if self.needs_recovery:
            self.recover()
        self.replicated_events = {}
        if not records:
            return self.seq
        expected = self.seq + 1
        for record in records:
            if record.shard_id != self.shard_id:
                raise WALGapError(self.shard_id, expected, record.seq)
            if record.seq != expected:
                raise WALGapError(self.shard_id, expected, record.seq)
            expected += 1
        append = getattr(self.store, "append")  # noqa: B009 - the recorder's batch entry
        before = self.seq
        start = 0
        refused: WALCorruptionError | None = None
        while start < len(records):
            # one transaction per run of equal epochs: the head's epoch may only grow
            end = start
            while end < len(records) and records[end].epoch == records[start].epoch:
                end += 1
            run = records[start:end]
            # decoded before anything is stored: a record naming a type that is not ours is
            # corrupt, refused with the records after it (the ones before it are stored)
            decoded: list[list[Aggregate.Event]] = []
            for record in run:
                try:
                    decoded.append(self.decode_record(record))
                except UnknownTypeError as exc:
                    refused = WALCorruptionError(self.shard_id, record.seq, str(exc))
                    run = run[: len(decoded)]
                    break
            if not run:
                break
            stored = [
                StoredEvent(e.originator_id, e.originator_version, e.topic, e.state)
                for record in run
                for e in record.events
            ]
            try:
                append(stored, run, epoch=run[0].epoch, prev_seq=self.seq)
            except Exception:
                self.needs_recovery = True
                raise
            for record, events in zip(run, decoded, strict=False):
                for event in events:
                    self.engine.apply(event)
                self.replicated_events[record.seq] = events
                if record.command_key is not None:
                    self._remember_key(record.command_key, record.seq)
            self.seq = self.durable_seq = run[-1].seq
            self.chain_checksum = run[-1].checksum
            self.epoch = max(self.epoch, run[-1].epoch)
            self.events_written += len(stored)
            self.last_applied_at_us = run[-1].recorded_at_us
            if refused is not None:
                break
            start = end
        if self._crossed_checkpoint(before):
            # a standby checkpoints at the leader's intervals too: promoted and then restarted,
            # it recovers from a recent checkpoint instead of replaying its whole WAL
            self._checkpoint_durable_state()
        if refused is not None:
            raise refused
        return self.seq

    def _crossed_checkpoint(self, before_seq: int) -> bool:
        """Whether the seq moved past a checkpoint interval since `before_seq`."""
        return self.seq // self.checkpoint_every > before_seq // self.checkpoint_every

    def _save_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Store a captured checkpoint; a failure costs recovery time, not data (logged; the
        next interval tries again)."""
        try:
            self.store.save_checkpoint(checkpoint)
        except Exception as exc:
            log.warning(
                "checkpoint failed shard=%s seq=%s error=%s", self.shard_id, checkpoint.seq, exc
            )
            return
        log.info(
            "checkpoint shard=%s epoch=%s seq=%s", self.shard_id, checkpoint.epoch, checkpoint.seq
        )

    # -- queries ----------------------------------------------------------------------------

    def find_order(self, order_id: UUID) -> Order | None:
        """An open order from memory, a closed one from the event store."""
        live = self.engine.order(order_id)
        if live is not None:
            return live
        try:
            return cast(Order, self.repository.get(order_id))
        except AggregateNotFoundError:
            return None

    def get_order(self, order_id: UUID) -> Order:
        order = self.find_order(order_id)
        if order is None:
            raise UnknownOrder(f"order {order_id} does not exist in shard {self.shard_id}")
        return order

    # -- checkpoints and recovery -----------------------------------------------------------

    def take_due_checkpoint(self) -> None:
        """The writer's call once the batch that crossed an interval is durable."""
        self.checkpoint_due = False
        if self.durable_seq != self.seq:
            return  # that batch did not land: recovery rebuilds the state, no checkpoint of it
        self._checkpoint_durable_state()

    def _checkpoint_durable_state(self) -> None:
        """Checkpoint the state, durable at self.seq: in the background if there is one, else
        here (a failure costs recovery time, not data: logged, the next interval tries again)."""
        if self.background_checkpoint is not None and self.background_checkpoint(self):
            return
        try:
            checkpoint = self.capture_checkpoint()
        except Exception as exc:
            log.warning("checkpoint failed shard=%s seq=%s error=%s", self.shard_id, self.seq, exc)
        else:
            self._save_checkpoint(checkpoint)

    def capture_checkpoint(self) -> StoredCheckpoint:
        """The engine state at the current seq, encoded and sealed (not stored)."""
        transcoder = self.mapper.transcoder
        state = encode_state(
            self.engine.live_aggregates(),
            self.engine.counters(),
            lambda value: plain_form(transcoder, value),
        )
        return StoredCheckpoint(
            shard_id=self.shard_id,
            seq=self.seq,
            epoch=self.epoch,
            state=state,
            state_hash=self.engine.state_hash(),
            checksum=checkpoint_checksum(self.shard_id, self.seq, self.epoch, state),
        )

    def checkpoint(self) -> StoredCheckpoint:
        """Write the engine state at the current seq: the start point of the next recovery."""
        if self.durable_seq != self.seq:
            raise RuntimeError("checkpoint while a batch is not yet durable")
        checkpoint = self.capture_checkpoint()
        self.store.save_checkpoint(checkpoint)
        log.info("checkpoint shard=%s epoch=%s seq=%s", self.shard_id, self.epoch, self.seq)
        return checkpoint

    def recover(
        self,
        *,
        from_scratch: bool = False,
        upto_seq: int | None = None,
        progress: ProgressFn | None = None,
    ) -> RecoveryReport:
        """Rebuild the hot state: newest checkpoint (unless from scratch), then the WAL tail."""
        with _collector_paused():
            return self._recover(from_scratch, upto_seq, progress)

    def _recover(
        self, from_scratch: bool, upto_seq: int | None, progress: ProgressFn | None
    ) -> RecoveryReport:
        started = time.perf_counter()
        head = self.store.head(self.shard_id)
        target = head.seq if upto_seq is None else min(upto_seq, head.seq)
        checkpoint = None
        verify_at: tuple[int, str] | None = None
        if from_scratch:
            # only its hash: the state is what a replay from scratch must not read
            verify_at = self.store.latest_checkpoint_hash(self.shard_id, at_or_before=target)
        else:
            checkpoint = self.store.latest_checkpoint(self.shard_id, at_or_before=target)
        if checkpoint is not None:
            engine = self.restore_checkpoint(checkpoint)
            start = checkpoint.seq
        else:
            engine = ShardEngine(self.shard_id, self.instruments)
            start = 0
        hash_matches: bool | None = None

        def on_record(seq: int) -> None:
            nonlocal hash_matches
            if verify_at is not None and seq == verify_at[0]:
                hash_matches = engine.state_hash() == verify_at[1]
            if progress is not None and seq % 1000 == 0:
                progress(seq - start, target - start)

        pages = raw_pages(self.store, self.shard_id, start, target)
        chain = ChainCursor(self.shard_id, legacy_upto=chain_start(self.store, self.shard_id))
        try:
            expected, events = replay_rows(
                self.shard_id,
                pages,
                decoder_for(self.mapper),
                engine.apply,
                expected=start + 1,
                on_record=on_record,
                chain=chain,
            )
        finally:
            pages.close()
        if expected - 1 != target:
            raise WALGapError(self.shard_id, target, expected - 1)
        if progress is not None:
            progress(target - start, target - start)
        self.engine = engine
        self.seq = self.durable_seq = target
        self.chain_checksum = chain.last
        self.epoch = max(self._requested_epoch or 1, head.epoch)
        self._recent_keys.clear()
        self._load_stored_keys(target)
        self.needs_recovery = False
        if self.on_recovered is not None:
            self.on_recovered(target)
        report = RecoveryReport(
            shard_id=self.shard_id,
            from_checkpoint_seq=start,
            records=target - start,
            events=events,
            seconds=time.perf_counter() - started,
            seq=target,
            state_hash=engine.state_hash(),
            checkpoint_hash_matches=hash_matches,
        )
        log.info(
            "recovered shard=%s epoch=%s seq=%s from_checkpoint=%s records=%s events=%s "
            "seconds=%.3f",
            self.shard_id,
            self.epoch,
            self.seq,
            start,
            report.records,
            events,
            report.seconds,
        )
        return report

    def apply_record(self, engine: ShardEngine, record: WalRecord) -> int:
        """Apply one verified WAL record's events to an engine; returns how many."""
        events = self.decode_record(record)
        for event in events:
            engine.apply(event)
        return len(events)

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

    def restore_checkpoint(self, checkpoint: StoredCheckpoint) -> ShardEngine:
        """Decode a verified checkpoint into an engine."""
        expected = checkpoint_checksum(
            checkpoint.shard_id, checkpoint.seq, checkpoint.epoch, checkpoint.state
        )
        if expected != checkpoint.checksum:
            raise WALCorruptionError(
                checkpoint.shard_id, checkpoint.seq, "checkpoint checksum mismatch"
            )
        decoder = decoder_for(self.mapper)
        try:
            if is_columnar(checkpoint.state):
                aggregates, counters = decode_state(checkpoint.state, decoder.revive)
            else:
                aggregates, counters = self._decode_snapshots(checkpoint.state)
        except ValueError as exc:
            raise WALCorruptionError(checkpoint.shard_id, checkpoint.seq, str(exc)) from None
        return ShardEngine.restore(self.shard_id, self.instruments, aggregates, counters)

    def _decode_snapshots(self, state: bytes) -> tuple[list[Aggregate], dict[str, int]]:
        """State of checkpoints written before the columnar layout: counters, then one
        snapshot per aggregate framed like a WAL payload."""
        counters_length = int.from_bytes(state[:4], "big")
        counters = json.loads(state[4 : 4 + counters_length])
        decode = decoder_for(self.mapper).decode
        aggregates = []
        try:
            stored = list(iter_payload(state[4 + counters_length :]))
        except ValueError as exc:
            raise ValueError(f"undecodable checkpoint: {exc}") from None
        for originator_id, version, topic, event_state in stored:
            snapshot = cast(Snapshot, decode(originator_id, version, topic, event_state))
            aggregates.append(cast(Aggregate, snapshot.mutate(None)))
        return aggregates, {str(k): int(v) for k, v in counters.items()}


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while recovery builds millions of objects, then freeze them.

    Every young-generation pass would walk the growing state, and the state lives until the next
    recovery: frozen, later collections skip it. Reference counting still frees what is dropped.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.enable()


def command_key(shard_id: str, command: Command) -> str | None:
    """The idempotency key of a command: a placed order's deterministic id, or a deposit's
    when it names its deposit_id."""
    if isinstance(command, PlaceOrder):
        account_id = Account.create_id(shard_id, command.account)
        return str(Order.create_id(account_id, command.client_order_id))
    if isinstance(command, Deposit) and command.deposit_id is not None:
        account_id = Account.create_id(shard_id, command.account)
        return str(Account.deposit_key(account_id, command.deposit_id))
    return None


def checkpoint_checksum(shard_id: str, seq: int, epoch: int, state: bytes) -> str:
    digest = hashlib.sha256(json.dumps([shard_id, seq, epoch]).encode())
    digest.update(b"\n")
    digest.update(state)
    return digest.hexdigest()
