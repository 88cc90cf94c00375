"""A shard's checkpoints: its engine state at a seq, captured, sealed, stored and restored."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Protocol, cast

from application.checkpoints.checkpoint import decode_state, encode_state, is_columnar
from application.checkpoints.legacy import decode_snapshots
from application.ports import StoredCheckpoint
from application.recovery.replay import decoder_for
from application.shard.core import ShardCore
from application.wal.records import WALCorruptionError
from application.wal.transcoding import plain_form
from domain.engine import ShardEngine

if TYPE_CHECKING:
    from application.shard.app import ShardApp

log = logging.getLogger("exchange_dr.shard")


class BackgroundCheckpoint(Protocol):
    """Takes a checkpoint of an app whose state is durable at its seq, away from the writer."""

    def __call__(self, app: ShardApp) -> bool:
        """Start it; False if it cannot (the app then captures inline)."""

    def wait(self, timeout_s: float) -> None:
        """Wait for the ones still running."""


def checkpoint_checksum(shard_id: str, seq: int, epoch: int, state: bytes) -> str:
    digest = hashlib.sha256(json.dumps([shard_id, seq, epoch]).encode())
    digest.update(b"\n")
    digest.update(state)
    return digest.hexdigest()


class ShardCheckpoints(ShardCore):
    """Checkpoints every `checkpoint_every` seqs: the start points of recovery."""

    def checkpoint(self) -> StoredCheckpoint:
        """Write the engine state at the current seq: the start point of the next recovery."""
        if self.durable_seq != self.seq:
            raise RuntimeError("checkpoint while a batch is not yet durable")
        checkpoint = self.capture_checkpoint()
        self.store.save_checkpoint(checkpoint)
        log.info("checkpoint shard=%s epoch=%s seq=%s", self.shard_id, self.epoch, self.seq)
        return checkpoint

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

    def take_due_checkpoint(self) -> None:
        """The writer's call once the batch that crossed an interval is durable."""
        self.checkpoint_due = False
        if self.durable_seq != self.seq:
            return  # that batch did not land: recovery rebuilds the state, no checkpoint of it
        self._checkpoint_durable_state()

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
                aggregates, counters = decode_snapshots(checkpoint.state, decoder.decode)
        except ValueError as exc:
            raise WALCorruptionError(checkpoint.shard_id, checkpoint.seq, str(exc)) from None
        return ShardEngine.restore(self.shard_id, self.instruments, aggregates, counters)

    def _crossed_checkpoint(self, before_seq: int) -> bool:
        """Whether the seq moved past a checkpoint interval since `before_seq`."""
        return self.seq // self.checkpoint_every > before_seq // self.checkpoint_every

    def _checkpoint_durable_state(self) -> None:
        """Checkpoint the state, durable at self.seq: in the background if there is one, else
        here (a failure costs recovery time, not data: logged, the next interval tries again)."""
        background = self.background_checkpoint
        if background is not None and background(cast("ShardApp", self)):  # its only subclass
            return
        try:
            checkpoint = self.capture_checkpoint()
        except Exception as exc:
            log.warning("checkpoint failed shard=%s seq=%s error=%s", self.shard_id, self.seq, exc)
        else:
            self._save_checkpoint(checkpoint)

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
