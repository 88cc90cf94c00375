"""Retention and archive settings, read from ``EXDR_*`` environment variables.

EXDR_ARCHIVE_URL              where segment files go (fsspec URL or path); "{database}" in it
                              becomes the region's database name, so a standby finds its
                              leader's archive; default EXDR_VAR_DIR/archive/<database name>
EXDR_WAL_RETAIN_RECORDS       newest records a shard keeps live (default 1,000,000)
EXDR_CHECKPOINTS_KEEP         newest checkpoints kept besides those starting an archived range (3)
EXDR_ARCHIVE_MAX_HOLD_S       how long an absent standby may hold archiving back (3600)
EXDR_ARCHIVE_SEGMENT_RECORDS  records per segment at most, when checkpoints allow (100,000)
EXDR_ARCHIVE_INTERVAL_S       seconds between two archiver passes on a node (10)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from application.wal.retention import RetentionPolicy
from infra.settings import Settings


def _number(env: Mapping[str, str], var: str, default: float, minimum: float) -> float:
    raw = env.get(var)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"{var}: expected a number, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{var}: must be >= {minimum:g}, got {raw.strip()}")
    return value


@dataclass(frozen=True, slots=True)
class ArchiveSettings:
    url: str
    policy: RetentionPolicy
    interval_s: float = 10.0

    @classmethod
    def from_env(
        cls, settings: Settings, dsn: str | None = None, env: Mapping[str, str] | None = None
    ) -> ArchiveSettings:
        e = os.environ if env is None else env
        database = (urlsplit(dsn or settings.pg_dsn).path or "/exchange_dr").lstrip("/")
        default = Path(settings.var_dir) / "archive" / database
        url = e.get("EXDR_ARCHIVE_URL", "").strip().replace("{database}", database)
        url = url or str(default)
        policy = RetentionPolicy(
            retain_records=int(_number(e, "EXDR_WAL_RETAIN_RECORDS", 1_000_000, 0)),
            max_hold_s=_number(e, "EXDR_ARCHIVE_MAX_HOLD_S", 3600.0, 0),
            segment_records=int(_number(e, "EXDR_ARCHIVE_SEGMENT_RECORDS", 100_000, 1)),
            checkpoints_keep=int(_number(e, "EXDR_CHECKPOINTS_KEEP", 3, 1)),
        )
        return cls(url, policy, _number(e, "EXDR_ARCHIVE_INTERVAL_S", 10.0, 0.1))
