"""The replicator's side of a standby re-seed: before it reads a gap from the leader's store it
asks once whether the gap reaches the leader's archive; a re-seed installs the leader's
checkpoint and the apply goes on from there, a refusal stops it at the gap (alerted, never
read record by record through the archive). Pure: an in-memory shard, leader's store and hook."""

from __future__ import annotations

from application.wal.records import WalRecord
from application.wal.reseed import ReseedAction, ReseedPlan
from projections.replication.replicator import Replicator
from tests.unit.test_replicator_bookkeeping import _App, _Primary
from tests.unit.wal_records import sealed_records


class _Hook:
    """The re-seed hook: answers with `action`; a RESEED installs the leader's checkpoint at
    `checkpoint` (the shard's state and chain as of that record) the way infra/wal/reseed.py
    does."""

    def __init__(
        self, app: _App, records: list[WalRecord], action: ReseedAction, checkpoint: int = 0
    ):
        self.app, self.records = app, records
        self.action, self.checkpoint = action, checkpoint
        self.asked: list[int] = []  # the applied seq at each question

    def __call__(self, replicator: Replicator) -> ReseedPlan:
        assert replicator.app is self.app  # type: ignore[comparison-overlap]
        self.asked.append(self.app.seq)
        if self.action is ReseedAction.RESEED:
            self.app.stored = list(self.records[: self.checkpoint])
            self.app.seq = self.checkpoint
        return ReseedPlan(self.action, f"test: {self.action.value}", self.app.seq + 1)


def _rig(
    count: int, action: ReseedAction, checkpoint: int = 0
) -> tuple[Replicator, _App, _Primary, _Hook, list[WalRecord]]:
    records = sealed_records(count)
    app, primary = _App(), _Primary(records)
    replicator = Replicator(app, primary)  # type: ignore[arg-type]
    hook = _Hook(app, records, action, checkpoint)
    replicator.reseed = hook
    return replicator, app, primary, hook, records


def test_a_new_standby_has_no_hook_no_refusal_and_no_reseed() -> None:
    replicator = Replicator(_App(), _Primary([]))  # type: ignore[arg-type]
    assert replicator.reseed is None and replicator.reseed_refused is None
    assert replicator.stats.reseeds == 0


def test_a_gap_reaching_the_archive_is_reseeded_and_the_rest_applied_from_the_checkpoint() -> None:
    replicator, app, primary, hook, records = _rig(20, ReseedAction.RESEED, checkpoint=10)
    # 1..3 delivered, 4..7 missing, 8..20 delivered: the gap is asked about before any read
    delivered = records[:3] + records[7:]
    assert replicator.apply_wire([r.to_wire() for r in delivered]) == 20
    assert hook.asked == [0]  # once, before the gap, with nothing applied
    assert replicator.stats.reseeds == 1 and replicator.reseed_refused is None
    # 1..3 were below the checkpoint (never stored twice), 11..20 follow it on its chain
    assert [r.seq for r in app.stored] == list(range(1, 21)) and app.stored == records
    assert primary.reads == []  # 11..20 were all delivered: nothing read from the store
    assert [r.seq for r in replicator.last_applied] == list(range(11, 21))
    assert replicator.stats.applied == 10 and replicator.stats.gap_fills == 0
    assert replicator.lag_records() == 0


def test_after_a_reseed_a_gap_beyond_the_checkpoint_is_read_from_the_live_table() -> None:
    replicator, app, primary, hook, records = _rig(20, ReseedAction.RESEED, checkpoint=10)
    assert replicator.apply_wire([records[-1].to_wire()]) == 20
    assert hook.asked == [0] and replicator.stats.reseeds == 1
    assert primary.reads == [(10, 2000)]  # from the checkpoint on, not from 0
    assert replicator.stats.gap_fills == 9 and app.stored == records
    # a second re-seed is counted again
    replicator2, _, _, hook2, records2 = _rig(30, ReseedAction.RESEED, checkpoint=25)
    replicator2.apply_wire([records2[-1].to_wire()])
    hook2.checkpoint = 28
    hook2.app.seq, hook2.app.stored = 20, records2[:20]  # set back: the next gap asks again
    replicator2.apply_wire([records2[-1].to_wire()])
    assert replicator2.stats.reseeds == 2 and hook2.app.seq == 30


def test_a_refused_gap_stops_the_apply_before_it_and_is_not_asked_again_per_delivery() -> None:
    replicator, app, primary, hook, records = _rig(8, ReseedAction.REFUSE)
    delivered = records[:3] + records[5:]
    assert replicator.apply_wire([r.to_wire() for r in delivered]) == 3
    assert hook.asked == [0] and replicator.reseed_refused is not None
    assert replicator.reseed_refused.action is ReseedAction.REFUSE
    assert primary.reads == [] and replicator.stats.reseeds == 0
    assert replicator.lag_records() == 5  # 4..8 are known to exist and missing
    # later deliveries while refused: applied up to the gap, the hook not asked per delivery
    assert replicator.apply_wire([records[7].to_wire()]) == 3
    assert hook.asked == [0] and primary.reads == []
    # the periodic catch-up asks again; once the gap is within reach it is filled
    hook.action = ReseedAction.NONE
    assert replicator.catch_up() == 8
    # catch-up asks, and the apply asks again at the gap (the real hook lists the leader's
    # archive at most once per RECHECK_S)
    assert hook.asked == [0, 3, 3] and replicator.reseed_refused is None
    assert app.stored == records and primary.reads == [(3, 2000)]


def test_the_hook_is_asked_once_per_apply_even_with_two_gaps() -> None:
    records = sealed_records(6)
    app, primary = _App(), _Primary(records[:3])  # the leader's store lacks 4: a hole
    replicator = Replicator(app, primary)  # type: ignore[arg-type]
    hook = _Hook(app, records, ReseedAction.NONE)
    replicator.reseed = hook
    assert replicator.apply_wire([r.to_wire() for r in records[4:]]) == 3
    assert hook.asked == [0]  # the gap 1..3 asked about; the hole at 4 is not asked again
    assert primary.reads == [(0, 2000), (3, 2000)]


def test_catch_up_on_a_refused_gap_reads_nothing_and_reports_the_lag() -> None:
    replicator, _app, primary, hook, _records = _rig(50, ReseedAction.REFUSE)
    assert replicator.catch_up() == 0
    assert hook.asked == [0] and primary.reads == []  # no error loop through the archive
    assert replicator.stats.last_seen_seq == 50 and replicator.lag_records() == 50
    assert replicator.behind_since_us is not None and replicator.lag_seconds() >= 0.0


def test_catch_up_does_not_ask_when_caught_up_or_while_a_promotion_reads_the_seq() -> None:
    replicator, _app, _primary, hook, _records = _rig(5, ReseedAction.REFUSE)
    hook.action = ReseedAction.NONE
    assert replicator.catch_up() == 5 and hook.asked == [0, 0]  # catch-up, then the apply
    assert replicator.catch_up() == 5 and hook.asked == [0, 0]  # at the head: nothing to ask
    replicator2, _, _primary2, hook2, _ = _rig(5, ReseedAction.REFUSE)
    replicator2.frozen = True  # a promotion reads the seq its epoch follows
    assert replicator2.catch_up() == 0
    assert hook2.asked == [] and replicator2.reseed_refused is None


def test_after_a_reseed_the_next_record_must_chain_from_the_checkpoint() -> None:
    """The checkpoint's chain checksum is where the apply goes on: a delivered record 11 of
    another history (a forged or forked copy) is refused, and the real one read instead."""
    replicator, app, primary, hook, records = _rig(12, ReseedAction.RESEED, checkpoint=10)
    forged = sealed_records(2, first=11, prev=records[3].checksum)  # links to the wrong 10
    assert replicator.apply_wire([r.to_wire() for r in records[:3] + forged]) == 12
    assert hook.asked == [0] and replicator.stats.rejected == {"chain": 1}
    assert app.stored == records  # 11 and 12 as the leader's store holds them
    assert primary.reads == [(10, 2000)]
