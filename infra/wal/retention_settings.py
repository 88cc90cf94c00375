"""Retention and archive settings of one region, from the process settings (read once in
infra/settings.py, `Settings.archive`: EXDR_ARCHIVE_URL, EXDR_WAL_RETAIN_RECORDS,
EXDR_CHECKPOINTS_KEEP, EXDR_ARCHIVE_MAX_HOLD_S, EXDR_ARCHIVE_SEGMENT_RECORDS,
EXDR_ARCHIVE_INTERVAL_S, EXDR_ARCHIVE_READ_MODELS; README, Settings).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from application.wal.retention import RetentionPolicy
from infra.settings import ArchiveOptions, Settings
from projections.read_models.projector import PROJECTION


@dataclass(frozen=True, slots=True)
class ArchiveSettings:
    url: str
    policy: RetentionPolicy
    interval_s: float = 10.0
    # the projection whose tracking row archiving waits for (None: it does not wait); the
    # region's history is served from these read models and the live WAL after them
    read_models: str | None = PROJECTION

    @classmethod
    def from_env(
        cls, settings: Settings, dsn: str | None = None, env: Mapping[str, str] | None = None
    ) -> ArchiveSettings:
        """The region of `dsn`'s archive; `env` (tests) overrides the settings' options."""
        options = settings.archive if env is None else ArchiveOptions.from_env(env)
        database = (urlsplit(dsn or settings.pg_dsn).path or "/exchange_dr").lstrip("/")
        default = Path(settings.var_dir) / "archive" / database
        url = options.url.replace("{database}", database) or str(default)
        policy = RetentionPolicy(
            retain_records=options.retain_records,
            max_hold_s=options.max_hold_s,
            segment_records=options.segment_records,
            checkpoints_keep=options.checkpoints_keep,
        )
        read_models = PROJECTION if options.read_models == "wait" else None
        return cls(url, policy, options.interval_s, read_models)
