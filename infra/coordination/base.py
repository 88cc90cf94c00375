"""What the failover controller needs of a coordination service (Patroni's abstract DCS):
one leader per shard held by a live session, an append-only epoch history, a lock for one
failover at a time, and a planned-handover request. infra/coordination/zookeeper.py is the
implementation; tests/unit/fake_coordination.py is one in memory.

Every method except `is_leader`, `leader` and `leader_url` may wait on the network: callers
on an event loop run them in a thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    region: str
    url: str
    epoch: int
    start_seq: int


class Coordination(Protocol):
    def is_leader(self, shard_id: str) -> bool:
        """This region leads the shard and its lease holds (any thread, no I/O)."""
        ...

    def leader(self, shard_id: str) -> LeaderInfo | None:
        """Who leads, as last seen (the watch's cache)."""
        ...

    def leader_url(self, shard_id: str) -> str | None: ...

    def refresh_leader(self, shard_id: str) -> LeaderInfo | None:
        """Who leads, read from the servers now."""
        ...

    def epochs(self, shard: str) -> list[tuple[int, int]]:
        """[(epoch, start_seq), ...] oldest first."""
        ...

    def lock(self, shard: str, timeout: float = 2.0) -> Any:
        """The shard's failover lock (with `release()`), or None if another holds it."""
        ...

    def take_leadership(self, shard: str, *, applied_seq: int, min_epoch: int = 0) -> int:
        """Append an epoch starting at `applied_seq + 1`, create the leader node; the epoch."""
        ...

    def resign(self, shard: str) -> None:
        """Stop leading; delete the leader node if (and only if) it is this region's."""
        ...

    def request_handover(self, shard: str, to_region: str) -> None: ...

    def handover_target(self, shard: str) -> str | None: ...

    def clear_handover(self, shard: str) -> None: ...

    def publish_position(self, shard: str, *, kind: str, epoch: int, seq: int) -> None:
        """This region's replica position, visible to the others while its session lives."""
        ...

    def members(self, shard: str) -> list[dict[str, Any]]:
        """The live replicas' published positions."""
        ...
