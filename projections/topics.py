"""Topic names: one ordered WAL stream per shard, one stream of standby confirmations."""

from __future__ import annotations

import os


def topic_prefix() -> str:
    """`EXDR_TOPIC_PREFIX` lets tests and parallel drills use topics of their own."""
    return os.environ.get("EXDR_TOPIC_PREFIX", "exdr").strip() or "exdr"


def wal_topic_name(shard_id: str, prefix: str | None = None) -> str:
    """The shard's WAL records, key = shard id, one partition: order per shard is kept."""
    return f"{prefix or topic_prefix()}.wal.{shard_id}"


def acks_topic_name(prefix: str | None = None) -> str:
    """Standby -> primary: `{shard, region, seq, epoch}` after each durable apply."""
    return f"{prefix or topic_prefix()}.wal-acks"
