"""Configured leadership: this region leads every shard it serves, or none of them.

Stands in for the ZooKeeper-backed implementation of the failover issue. EXDR_API_LEADS=all|none
(default all); EXDR_LEADER_URL names the leader's facade, returned to clients of a non-leader.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StaticLeadership:
    """Implements application.leadership.Leadership from configuration."""

    leads: bool
    url: str | None = None

    def is_leader(self, shard_id: str) -> bool:
        return self.leads

    def leader_url(self, shard_id: str) -> str | None:
        return self.url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StaticLeadership:
        e = os.environ if env is None else env
        leads = e.get("EXDR_API_LEADS", "all").strip().lower()
        if leads not in ("all", "none"):
            raise ValueError(f"EXDR_API_LEADS: expected 'all' or 'none', got {leads!r}")
        url = e.get("EXDR_LEADER_URL", "").strip() or None
        return cls(leads=leads == "all", url=url)
