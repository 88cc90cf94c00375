"""The retention decisions, without servers: what may leave the live WAL and which checkpoints
stay."""

from __future__ import annotations

from typing import Any

import pytest

from application.wal.retention import (
    Follower,
    Projected,
    RetentionPolicy,
    checkpoints_to_delete,
    plan_segment,
)

POLICY = RetentionPolicy(retain_records=1000, max_hold_s=60, segment_records=500)
CHECKPOINTS = list(range(100, 3001, 100))


def test_nothing_is_archived_inside_the_window() -> None:
    plan = plan_segment(POLICY, head_seq=900, archived_seq=0, checkpoint_seqs=CHECKPOINTS)
    assert not plan.due
    assert plan.reason == "nothing to archive: window keeps the newest 1000 of 900"


def test_a_segment_ends_at_the_newest_checkpoint_within_its_size() -> None:
    plan = plan_segment(POLICY, head_seq=3000, archived_seq=0, checkpoint_seqs=CHECKPOINTS)
    assert (plan.first_seq, plan.last_seq) == (1, 500)
    assert plan.reason == "archive 1..500: checkpoint at 500, window keeps the newest 1000 of 3000"
    nxt = plan_segment(POLICY, head_seq=3000, archived_seq=1900, checkpoint_seqs=CHECKPOINTS)
    assert (nxt.first_seq, nxt.last_seq) == (1901, 2000)


def test_no_checkpoint_no_archive() -> None:
    plan = plan_segment(POLICY, head_seq=3000, archived_seq=0, checkpoint_seqs=[2500])
    assert not plan.due and "no checkpoint in (0, 2000]" in plan.reason


def test_sparse_checkpoints_make_a_longer_segment() -> None:
    plan = plan_segment(POLICY, head_seq=5000, archived_seq=0, checkpoint_seqs=[1500, 3000])
    assert (plan.first_seq, plan.last_seq) == (1, 1500)


def test_a_standby_holds_back_until_it_has_been_away_too_long() -> None:
    near = Follower("standby", stored_seq=250, away_s=5)
    plan = plan_segment(
        POLICY, head_seq=3000, archived_seq=0, checkpoint_seqs=CHECKPOINTS, followers=[near]
    )
    assert (plan.last_seq, plan.released) == (200, ())
    assert "standby standby has stored up to 250" in plan.reason
    gone = Follower("standby", stored_seq=250, away_s=61)
    plan = plan_segment(
        POLICY, head_seq=3000, archived_seq=0, checkpoint_seqs=CHECKPOINTS, followers=[gone]
    )
    assert (plan.last_seq, plan.released) == (500, ("standby",))


def test_the_read_models_hold_archiving_at_their_tracking_row() -> None:
    def plan(projected: Projected, followers: list[Follower] | None = None) -> Any:
        return plan_segment(
            POLICY,
            head_seq=3000,
            archived_seq=0,
            checkpoint_seqs=CHECKPOINTS,
            followers=followers or [],
            projected=projected,
        )

    behind = plan(Projected("read_models", 350))
    assert (behind.last_seq, behind.held_by_read_models) == (300, True)
    assert "read models have projected up to 350 (read_models)" in behind.reason
    never = plan(Projected("read_models", None))
    assert not never.due and never.held_by_read_models
    assert "read models have no tracking row for the shard (read_models)" in never.reason
    # caught up: the window (or a slower standby) decides again, and says so
    ahead = plan(Projected("read_models", 3000))
    assert (ahead.last_seq, ahead.held_by_read_models) == (500, False)
    slower = plan(Projected("read_models", 350), [Follower("standby", 120, away_s=1)])
    assert (slower.last_seq, slower.held_by_read_models) == (100, False)
    assert "standby standby has stored up to 120" in slower.reason
    not_waited = plan_segment(POLICY, head_seq=3000, archived_seq=0, checkpoint_seqs=CHECKPOINTS)
    assert not not_waited.held_by_read_models and not_waited.last_seq == 500


def test_checkpoints_kept_are_the_newest_the_range_starts_and_the_ends_to_come() -> None:
    doomed = checkpoints_to_delete(
        CHECKPOINTS, 2, [1, 501, 1001, 1501], archived_seq=1500, segment_records=500
    )
    kept = sorted(set(CHECKPOINTS) - set(doomed))
    # 500, 1000 start archived ranges, 1500 the next one; 1900, 2400, 2900, 3000: the last of
    # each 500 seqs not archived yet (2900 and 3000 are also the newest two)
    assert kept == [500, 1000, 1500, 1900, 2400, 2900, 3000]


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        RetentionPolicy(segment_records=0)
