"""The failover manager's decision rules: pure functions of what a controller observed.

No I/O, no clock: the controller (infra/failover/controller.py) gathers the facts (ZooKeeper's
epoch history and leader node, the leader's health, the standby's lag) and asks these.
"""

from __future__ import annotations

from collections.abc import Sequence

EpochHistory = Sequence[tuple[int, int]]  # [(epoch, start_seq), ...] oldest first


def epoch_owning(history: EpochHistory, seq: int) -> int | None:
    """Which epoch wrote `seq` according to the history (None: before any epoch began)."""
    owner = None
    for epoch, start in history:
        if start <= seq:
            owner = epoch
    return owner


def record_is_current(history: EpochHistory, seq: int, epoch: int) -> bool:
    """A replicated record counts only if the epoch history says its epoch owns its seq."""
    owner = epoch_owning(history, seq)
    return owner is None or owner == epoch


def last_epoch_is(history: EpochHistory, epoch: int) -> bool:
    """Whether `epoch` is the newest in the shard's epoch history: then no region took the
    shard (nor began to: the history is appended before the leader node is made) after it."""
    return bool(history) and epoch > 0 and history[-1][0] == epoch


def may_promote(lag_s: float, max_lag_s: float) -> bool:
    """A standby lagging more than `max_lag` is never promoted: the shard stays down instead."""
    return lag_s <= max_lag_s


def failover_reason(
    *, leader_node_exists: bool, planned: bool, unhealthy_for_s: float, failover_after_s: float
) -> str | None:
    """Why a standby whose leader failed its health check should fail over now, or None.

    Never while the leader's ZooKeeper node lives: its session is alive, so it still leads (and
    fences itself by its lease if it is cut off). Then at once for a planned switchover, else
    once the failures have lasted `failover_after`."""
    if leader_node_exists:
        return None
    if planned:
        return "planned switchover"
    if unhealthy_for_s >= failover_after_s:
        return f"leader unhealthy for {unhealthy_for_s:.2f}s and its session expired"
    return None
