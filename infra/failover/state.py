"""The roles a shard can have in one region, and what a promotion leaves on record."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    STARTING = "starting"  # the node has not decided yet
    STANDBY = "standby"  # follows the leader, may be promoted
    PROMOTING = "promoting"  # holds the failover lock, taking the shard
    LEADER = "leader"  # writes, relays, acknowledges
    HANDING_OVER = "handing_over"  # a leader draining for a planned switchover
    FENCED = "fenced"  # deposed or stopping: accepts nothing, waits to rejoin

    @property
    def leads(self) -> bool:
        """Confirmations of the shard's standbys still count (a drain waits for them)."""
        return self in (Role.LEADER, Role.HANDING_OVER)


@dataclass
class FailoverRecord:
    shard: str
    from_region: str
    to_region: str
    epoch: int
    seq: int
    at: float
    reason: str


class PromotionError(Exception):
    """A promotion could not finish: the shard was given back, the next round tries again."""
