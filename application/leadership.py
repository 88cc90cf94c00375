"""The leadership port: whether this instance may accept commands for a shard, and who may."""

from __future__ import annotations

from typing import Protocol


class Leadership(Protocol):
    """Answers per shard; implementations must be cheap (called on every command)."""

    def is_leader(self, shard_id: str) -> bool: ...

    def leader_url(self, shard_id: str) -> str | None: ...
