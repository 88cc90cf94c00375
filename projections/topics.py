"""Topic names: one ordered WAL stream per shard, one stream of standby confirmations.

Every name starts with the deployment's topic prefix (`BrokerSettings.topic_prefix`), so tests
and parallel drills on one broker each use topics of their own.
"""

from __future__ import annotations


def wal_topic_name(prefix: str, shard_id: str) -> str:
    """The shard's WAL records, key = shard id, one partition: order per shard is kept."""
    return f"{prefix}.wal.{shard_id}"


def acks_topic_name(prefix: str) -> str:
    """Standby -> primary: `{shard, region, seq, epoch}` after each durable apply."""
    return f"{prefix}.wal-acks"
