"""Run one archiver pass that SIGKILLs itself at a given step (tests of crash safety)."""

from __future__ import annotations

import sys

from application.wal.retention import RetentionPolicy
from infra.wal.archive import SegmentArchive
from infra.wal.archiver import Archiver


def main() -> None:
    dsn, shard, url, crash_at = sys.argv[1:5]
    policy = RetentionPolicy(retain_records=800, segment_records=1000, checkpoints_keep=2)
    Archiver(dsn, SegmentArchive(url), policy, crash_at=crash_at).run(shard)
    raise SystemExit("the archiver was expected to crash")


if __name__ == "__main__":
    main()
