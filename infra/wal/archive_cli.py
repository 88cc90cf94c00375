"""`exchange-dr archive --shard S`: one archiver pass now (operators, tests), no followers
known: run it where no standby needs the records, or let the node's archiver decide. Like
the node's archiver it waits for the region's read models (EXDR_ARCHIVE_READ_MODELS), and
says how far they are (`read_models_seq`, null: no tracking row) and whether they held it."""

from __future__ import annotations

from typing import Any

from infra.settings import Settings
from infra.wal.archive import SegmentArchive
from infra.wal.archiver import Archiver
from infra.wal.retention_settings import ArchiveSettings


def archive_shard(settings: Settings, shard: str) -> dict[str, Any]:
    if shard not in settings.shards():
        raise ValueError(f"unknown shard {shard!r}; configured: {', '.join(settings.shards())}")
    config = ArchiveSettings.from_env(settings)
    run = Archiver(
        settings.pg_dsn, SegmentArchive(config.url), config.policy, read_models=config.read_models
    ).run(shard)
    return {
        "shard": shard,
        "segments": run.segments,
        "records": run.records,
        "archived_seq": run.archived_seq,
        "checkpoints_deleted": run.checkpoints_deleted,
        "seconds": round(run.seconds, 3),
        "decision": run.decision,
        "read_models": config.read_models,
        "read_models_seq": run.read_models_seq,
        "held_by_read_models": run.held_by_read_models,
        "archive": config.url,
    }
