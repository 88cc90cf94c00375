"""A shard's commands: executed in memory in order, sealed as WAL records, committed together."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import Snapshot
from eventsourcing.persistence import StoredEvent

from application.ports import StoredCheckpoint
from application.shard.keys import command_key
from application.shard.recovery import ShardRecovery
from application.wal.records import GENESIS, RecordedEvent, WalRecord
from domain.account import Account
from domain.commands import Command, Deposit, PlaceOrder
from domain.engine import CommandResult
from domain.errors import DomainError
from domain.order import Order

log = logging.getLogger("exchange_dr.shard")


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


class ShardBatches(ShardRecovery):
    """The leader's write path: prepare a batch in memory, then commit it in one transaction."""

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
        known = self.keys.known(keys)
        batch = PreparedBatch(results=results, first_seq=self.seq + 1)
        recorded_at_us = self._clock_us()
        for index, command in enumerate(commands):
            present = presenters[index] if presenters is not None else None
            key = keys[index]
            if key is not None and key in known:
                # a retry answers with the order or account as it is now, not as it was at
                # known[key]: it waits until a majority holds that state (invariant 11)
                batch.ack_seq = max(batch.ack_seq, self.seq)
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
                    sign=None
                    if self.replication_keys is None
                    else self.replication_keys.sign_record,
                )
            )
            self.chain_checksum = batch.records[-1].checksum
            if key is not None:
                known[key] = self.seq
                self.keys.remember(key, self.seq)
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
            self.store.append(
                batch.stored, batch.records, epoch=self.epoch, prev_seq=batch.first_seq - 1
            )
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

    def _duplicate_outcome(
        self, command: Command, seq: int, pending: Sequence[WalRecord] = ()
    ) -> Outcome:
        """What a retried command answers: the outcome stored first under its key."""
        order: Order | None = None
        if isinstance(command, PlaceOrder):
            order_id = UUID(command_key(self.shard_id, command))
            order = self.find_order(order_id)
            if order is None:
                # closed, and its events archived with their records: the order as its
                # placement left it, from the placing record (in the archive by now)
                order = self.order_after(order_id, self._record_at(seq, pending))
        if isinstance(command, Deposit):
            account = self.engine.account(command.account)
            result = None if account is None else CommandResult(touched=(), account=account)
            differs = self._deposited_at(seq, pending) != command.amount
            return Outcome(seq, command, result, None, duplicate=True, differs=differs)
        return Outcome(seq, command, None, order, duplicate=True)

    def _record_at(self, seq: int, pending: Sequence[WalRecord]) -> Sequence[WalRecord]:
        """The record at `seq`: from the batch being prepared if it is one of its records, else
        from the store (live, or archived)."""
        records = [r for r in pending if r.seq == seq]
        return records or self.store.read_records(self.shard_id, seq - 1, 1)

    def _deposited_at(self, seq: int, pending: Sequence[WalRecord]) -> Decimal | None:
        """The amount the deposit at `seq` credited (a retry is compared with it): from the
        batch being prepared if it is one of its records, else from the store."""
        for record in self._record_at(seq, pending):
            for event in self.decode_record(record):
                if isinstance(event, Account.Deposited):
                    return event.amount
        return None
