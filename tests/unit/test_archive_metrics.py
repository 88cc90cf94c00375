"""The archive's metrics and the followers a leader's archiver waits for, without servers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from application.wal.retention import RetentionPolicy
from infra.metrics.dr_metrics import archive_metrics
from infra.settings import Settings
from infra.wal.archive_service import ArchiveService, ShardArchiveState, leader_followers
from infra.wal.retention_settings import ArchiveSettings


def _service() -> ArchiveService:
    config = ArchiveSettings("memory://archive", RetentionPolicy(retain_records=1000))
    service = ArchiveService("postgresql://unused/db", config, ["shard-1"], lambda _s: [])
    service.states["shard-1"] = ShardArchiveState(
        archived_seq=5000,
        segments=3,
        bytes=123456,
        lag_records=0,
        passes=2,
        released=("standby",),
        read_models_seq=None,
        held_by_read_models=True,
    )
    return service


def test_archive_metrics_name_the_live_window_and_the_archive() -> None:
    samples: dict[str, Any] = {}
    for family in archive_metrics(_service()):
        for sample in family.samples:
            samples[sample.name + str(sorted(sample.labels.items()))] = sample.value
    assert samples["wal_retain_records[('shard', 'shard-1')]"] == 1000
    assert samples["wal_archive_last_seq[('shard', 'shard-1')]"] == 5000
    assert samples["wal_archive_segments[('shard', 'shard-1')]"] == 3
    assert samples["wal_archive_bytes[('shard', 'shard-1')]"] == 123456
    assert samples["wal_archive_lag_records[('shard', 'shard-1')]"] == 0
    assert samples["wal_archive_standby_released[('peer', 'standby'), ('shard', 'shard-1')]"] == 1
    assert samples["wal_archive_errors_total[('shard', 'shard-1')]"] == 0
    # no tracking row for the shard: archiving is held, and the gauges say why
    assert samples["wal_archive_held_by_read_models[('shard', 'shard-1')]"] == 1
    assert samples["wal_archive_read_models_seq[('shard', 'shard-1')]"] == -1


def test_a_leader_waits_for_every_other_region_at_the_seq_its_gate_saw() -> None:
    settings = Settings()
    confirmed = {"standby": 420, "witness": 380}
    gate = SimpleNamespace(
        standby_seq=420, standby_seen_at=0.0, stored_on=lambda region: confirmed.get(region, 0)
    )
    leader = SimpleNamespace(role="leader", gate=gate)
    node = SimpleNamespace(
        controllers={"shard-1": leader, "shard-2": SimpleNamespace(role="standby")},
        settings=settings,
        region=settings.regions[0],
    )
    followers = leader_followers(node, "shard-1", started_at=0.0)
    # each follower at its own confirmation: the slower witness holds archiving at 380
    assert [(f.name, f.stored_seq) for f in followers] == [("standby", 420), ("witness", 380)]
    assert followers[0].away_s > 0
    assert leader_followers(node, "shard-2", started_at=0.0) == []


def test_archiving_waits_for_the_read_models_unless_told_not_to() -> None:
    settings = Settings()
    assert ArchiveSettings.from_env(settings, env={}).read_models == "read_models"
    ignoring = ArchiveSettings.from_env(settings, env={"EXDR_ARCHIVE_READ_MODELS": "Ignore "})
    assert ignoring.read_models is None
    with pytest.raises(ValueError, match="EXDR_ARCHIVE_READ_MODELS: expected one of wait, ignore"):
        ArchiveSettings.from_env(settings, env={"EXDR_ARCHIVE_READ_MODELS": "later"})
