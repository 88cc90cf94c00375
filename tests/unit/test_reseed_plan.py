"""When a standby re-seeds: its gap reaches the leader's archive, the archive is readable from
here and the leader keeps a checkpoint at or after its archived seq; otherwise refused, with
the range and the reason."""

from __future__ import annotations

from typing import Any, cast

import pytest

from application.wal.reseed import ReseedAction, plan_reseed
from projections.replication.replicator import Replicator


def test_a_gap_that_starts_in_the_live_table_is_filled_from_there() -> None:
    plan = plan_reseed(applied_seq=500, leader_archived_seq=500, leader_checkpoint_seqs=[500])
    assert plan.action is ReseedAction.NONE and not plan.reaches_archive
    assert plan.from_seq == 501
    assert "filled from the live table" in plan.reason


def test_a_gap_reaching_archived_records_reseeds_from_the_newest_checkpoint_after_them() -> None:
    plan = plan_reseed(
        applied_seq=100, leader_archived_seq=1518, leader_checkpoint_seqs=[784, 1518, 1750, 2000]
    )
    assert plan.action is ReseedAction.RESEED
    assert (plan.from_seq, plan.archived_to, plan.checkpoint_seq) == (101, 1518, 2000)
    assert plan.reason == (
        "seqs 101..1518 are archived on the leader: re-seed from the leader's archive up to "
        "1518 and its checkpoint at 2000"
    )


def test_the_checkpoint_may_be_the_archived_seq_itself() -> None:
    plan = plan_reseed(applied_seq=0, leader_archived_seq=1518, leader_checkpoint_seqs=[784, 1518])
    assert (plan.action, plan.from_seq, plan.checkpoint_seq) == (ReseedAction.RESEED, 1, 1518)


def test_unreadable_segments_refuse_naming_range_files_and_archive() -> None:
    plan = plan_reseed(
        applied_seq=100,
        leader_archived_seq=1518,
        leader_checkpoint_seqs=[2000],
        unreadable=["a.seg", "b.seg", "c.seg", "d.seg"],
        archive_url="/var/archive/standby",
    )
    assert plan.action is ReseedAction.REFUSE and plan.reaches_archive
    assert plan.checkpoint_seq is None
    assert "seqs 101..1518 are archived on the leader" in plan.reason
    assert "/var/archive/standby (a.seg, b.seg, c.seg ...)" in plan.reason
    assert "EXDR_ARCHIVE_URL" in plan.reason


def test_no_checkpoint_at_or_after_the_archived_seq_refuses() -> None:
    plan = plan_reseed(applied_seq=10, leader_archived_seq=1518, leader_checkpoint_seqs=[784])
    assert plan.action is ReseedAction.REFUSE
    assert "no checkpoint at or after 1518" in plan.reason


def test_negative_seqs_are_refused() -> None:
    with pytest.raises(ValueError):
        plan_reseed(applied_seq=-1, leader_archived_seq=0, leader_checkpoint_seqs=())


class _App:
    shard_id = "shard-1"
    seq = 100
    chain_checksum = None


class _Head:
    seq = 2000


class _UnreachableArchive:
    """A leader whose records after 100 are archived where this region cannot read them."""

    def head(self, shard_id: str) -> _Head:
        return _Head()

    def read_records(self, *args: object, **kwargs: object) -> list[object]:
        raise AssertionError("the leader's store was asked for archived records")


def test_a_refused_standby_stops_asking_the_leaders_store_and_shows_its_lag() -> None:
    plans = []

    def refuse(replicator: Replicator) -> Any:
        plans.append(
            plan_reseed(
                applied_seq=replicator.app.seq,
                leader_archived_seq=1518,
                leader_checkpoint_seqs=[2000],
                unreadable=["a.seg"],
            )
        )
        return plans[-1]

    replicator = Replicator(cast(Any, _App()), cast(Any, _UnreachableArchive()))
    replicator.reseed = refuse
    assert [replicator.catch_up(everything=False) for _ in range(3)] == [100, 100, 100]
    assert replicator.apply_wire([]) == 100  # the broker's path does not ask either
    assert len(plans) == 3 and replicator.reseed_refused is plans[-1]
    assert replicator.lag_records() == 1900
