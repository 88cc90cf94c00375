"""A shard's recovery: the newest checkpoint, then the WAL tail replayed and verified."""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from application.ports import StoredCheckpoint
from application.recovery.replay import chain_start, decoder_for, raw_pages, replay_rows
from application.shard.checkpoints import ShardCheckpoints
from application.wal.chain import ChainCursor
from application.wal.records import GENESIS, WALGapError
from domain.engine import ShardEngine

log = logging.getLogger("exchange_dr.shard")

ProgressFn = Callable[[int, int], None]


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


class ShardRecovery(ShardCheckpoints):
    """Rebuilds the hot state from the store: at start, and after a batch failed to commit."""

    def recover(
        self,
        *,
        from_scratch: bool = False,
        upto_seq: int | None = None,
        progress: ProgressFn | None = None,
        epoch_history: Sequence[tuple[int, int]] | None = None,
    ) -> RecoveryReport:
        """Rebuild the hot state: newest trusted checkpoint (unless from scratch), then the WAL
        tail. `epoch_history` ((epoch, start seq), oldest first) is checked besides the WAL."""
        if self.log_only:
            return self._recover_head()
        with _collector_paused():
            return self._recover(from_scratch, upto_seq, progress, epoch_history)

    def _recover_head(self) -> RecoveryReport:
        """A witness's recovery: where its stored WAL ends, and nothing else."""
        started = time.perf_counter()
        head = self.store.head(self.shard_id)
        self.seq = self.durable_seq = head.seq
        self.epoch = max(self._requested_epoch or 1, head.epoch)
        # the chain goes on from the stored head: the next record must name its checksum
        last = self.store.read_records(self.shard_id, head.seq - 1, 1) if head.seq else []
        self.chain_checksum = last[0].checksum if last else GENESIS
        self.needs_recovery = False
        if self.on_recovered is not None:
            self.on_recovered(head.seq)
        log.info(
            "recovered shard=%s epoch=%s seq=%s log_only=1", self.shard_id, self.epoch, self.seq
        )
        return RecoveryReport(
            shard_id=self.shard_id,
            from_checkpoint_seq=head.seq,
            records=0,
            events=0,
            seconds=time.perf_counter() - started,
            seq=head.seq,
            state_hash="",
            checkpoint_hash_matches=None,
        )

    def _recover(
        self,
        from_scratch: bool,
        upto_seq: int | None,
        progress: ProgressFn | None,
        epoch_history: Sequence[tuple[int, int]] | None = None,
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
            checkpoint = self._trusted_checkpoint(target, epoch_history)
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
        self.keys.reset(target)
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

    def _trusted_checkpoint(
        self, upto_seq: int, epoch_history: Sequence[tuple[int, int]] | None
    ) -> StoredCheckpoint | None:
        """The newest checkpoint at or before `upto_seq` that this history contains.

        A checkpoint taken by a deposed leader can be stored after the quarantine that set its
        records aside (a forked checkpointer child finishes late): its seq then belongs to a
        later epoch, in the WAL and in the epoch history. Such a checkpoint is refused, and an
        older one (or a replay from scratch) is used instead."""
        limit = upto_seq
        while True:
            checkpoint = self.store.latest_checkpoint(self.shard_id, at_or_before=limit)
            if checkpoint is None:
                return None
            owner = self._epoch_owning(checkpoint.seq, epoch_history)
            if owner is not None and owner <= checkpoint.epoch:
                return checkpoint
            log.warning(
                "checkpoint refused shard=%s seq=%s epoch=%s owner_epoch=%s: not in the "
                "epoch history",
                self.shard_id,
                checkpoint.seq,
                checkpoint.epoch,
                owner,
            )
            limit = checkpoint.seq - 1

    def _epoch_owning(
        self, seq: int, epoch_history: Sequence[tuple[int, int]] | None
    ) -> int | None:
        """The epoch that wrote `seq`: its WAL record's, and the history's when one is given
        (None when they disagree or either has no answer)."""
        if seq == 0:
            return 0
        records = self.store.read_records(self.shard_id, seq - 1, 1, verify=False)
        if not records or records[0].seq != seq:
            return None
        stored = records[0].epoch
        if epoch_history is None:
            return stored
        owner: int | None = None
        for epoch, start in sorted(epoch_history, key=lambda entry: entry[1]):
            if start <= seq:
                owner = epoch
        return stored if owner == stored else None


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
