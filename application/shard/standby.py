"""A standby's apply: the primary's verified records, stored at their own seq, then applied."""

from __future__ import annotations

from collections.abc import Sequence

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent

from application.shard.recovery import ShardRecovery
from application.wal.records import WALCorruptionError, WALGapError, WalRecord
from application.wal.registry import UnknownTypeError


class ShardStandby(ShardRecovery):
    """The standby's write path: records of the primary, in its order, under its epochs."""

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
                self.store.append(stored, run, epoch=run[0].epoch, prev_seq=self.seq)
            except Exception:
                self.needs_recovery = True
                raise
            for record, events in zip(run, decoded, strict=False):
                if self.log_only:
                    continue  # a witness keeps the records, not the state they build
                for event in events:
                    self.engine.apply(event)
                self.replicated_events[record.seq] = events
                if record.command_key is not None:
                    self.keys.remember(record.command_key, record.seq)
            self.seq = self.durable_seq = run[-1].seq
            self.chain_checksum = run[-1].checksum
            self.epoch = max(self.epoch, run[-1].epoch)
            self.events_written += len(stored)
            self.last_applied_at_us = run[-1].recorded_at_us
            if refused is not None:
                break
            start = end
        if not self.log_only and self._crossed_checkpoint(before):
            # a standby checkpoints at the leader's intervals too: promoted and then restarted,
            # it recovers from a recent checkpoint instead of replaying its whole WAL
            self._checkpoint_durable_state()
        if refused is not None:
            raise refused
        return self.seq
