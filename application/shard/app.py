"""The shard application: one writer, one dense WAL, hot in-memory state, recovery.

`ShardApp` is built in layers, one concern a module of this package:

- `core`: the state (engine, seq, epoch, store), order queries, event decoding;
- `keys`: idempotency keys, so that a retried command finds its first outcome (`keyfilter`
  is the Bloom filter behind them);
- `checkpoints`: the engine state captured at a seq, stored and restored;
- `recovery`: the newest checkpoint, then the WAL tail replayed;
- `batch`: the leader's commands, prepared in memory and committed in one transaction;
- `standby`: the primary's records, stored and applied on a standby.

The names other packages use are imported from here.
"""

from __future__ import annotations

from application.shard.batch import (
    CommandFailedError,
    Outcome,
    PreparedBatch,
    Presenter,
    ShardBatches,
)
from application.shard.checkpoints import BackgroundCheckpoint, checkpoint_checksum
from application.shard.keys import command_key
from application.shard.recovery import ProgressFn, RecoveryReport
from application.shard.standby import ShardStandby

__all__ = [
    "BackgroundCheckpoint",
    "CommandFailedError",
    "Outcome",
    "PreparedBatch",
    "Presenter",
    "ProgressFn",
    "RecoveryReport",
    "ShardApp",
    "checkpoint_checksum",
    "command_key",
]


class ShardApp(ShardBatches, ShardStandby):
    """Per-shard event-sourced application: commands in, WAL records and aggregate events out."""

    name = "Exchange"
    is_snapshotting_enabled = True
