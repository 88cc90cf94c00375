"""Configured leadership for `exchange-dr serve`, which runs without ZooKeeper: this region
leads every shard it serves, or none of them.

`Settings.api_leads` (EXDR_API_LEADS=all|none, default all); `Settings.leader_url`
(EXDR_LEADER_URL) names the leader's facade, returned to clients of a non-leader. A node
(`exchange-dr node`) takes its leadership from ZooKeeper instead (infra/node/).
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.settings import Settings


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
    def from_settings(cls, settings: Settings) -> StaticLeadership:
        return cls(leads=settings.api_leads, url=settings.leader_url)
