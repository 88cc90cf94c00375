"""A shard's recovery: the newest checkpoint, then the WAL tail replayed and verified."""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from application.recovery.replay import decoder_for, raw_pages, replay_rows
from application.shard.checkpoints import ShardCheckpoints
from application.wal.records import WALGapError
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
    ) -> RecoveryReport:
        """Rebuild the hot state: newest checkpoint (unless from scratch), then the WAL tail."""
        if self.log_only:
            return self._recover_head()
        with _collector_paused():
            return self._recover(from_scratch, upto_seq, progress)

    def _recover_head(self) -> RecoveryReport:
        """A witness's recovery: where its stored WAL ends, and nothing else."""
        started = time.perf_counter()
        head = self.store.head(self.shard_id)
        self.seq = self.durable_seq = head.seq
        self.epoch = max(self._requested_epoch or 1, head.epoch)
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
        try:
            expected, events = replay_rows(
                self.shard_id,
                pages,
                decoder_for(self.mapper),
                engine.apply,
                expected=start + 1,
                on_record=on_record,
            )
        finally:
            pages.close()
        if expected - 1 != target:
            raise WALGapError(self.shard_id, target, expected - 1)
        if progress is not None:
            progress(target - start, target - start)
        self.engine = engine
        self.seq = self.durable_seq = target
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
