"""Lines of the failover controller that the transition table does not pin: its state before the
first round, following a leader (whose store fills gaps), and the epoch history it judges
replicated records on. No servers: the rig of tests/unit/controller_harness.py."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any, cast

import httpx
import pytest

from infra.coordination.base import LeaderInfo
from infra.failover.controller import HISTORY_READ_WAIT_S, HISTORY_RETRY_S, ShardController
from infra.failover.state import Role
from tests.unit.controller_harness import SHARD, FakeStore, make_rig


def test_a_new_controller_starts_with_no_role_no_leader_and_nothing_confirmed() -> None:
    rig = make_rig()
    old = rig.controller
    fresh = ShardController(old.ctx, SHARD, old.writer, old.replicator, old.gate, old.relay)
    assert fresh.role is Role.STARTING and not fresh.accepting()
    assert fresh.confirmed_seq() is None
    assert fresh.leader_region is None and fresh.history == [] and fresh.failovers == []
    assert fresh.failing_since is None and fresh.store_failing_since is None
    assert fresh.last_rto_s is None  # the RTO metric reports none yet
    assert fresh.rejoin_checked is False and fresh.pushes == []


def test_following_a_leader_reads_gaps_from_its_store_and_its_epoch_history() -> None:
    rig = make_rig(seq=5)
    rig.ensemble.epochs[SHARD] = [(1, 1), (2, 4)]
    opened: list[str] = []
    stores: dict[str, FakeStore] = {}

    def open_store(region: str) -> Any:
        opened.append(region)
        stores[region] = FakeStore()
        return type("View", (), {"store": stores[region]})()

    controller = rig.controller
    object.__setattr__(controller.ctx, "open_store", open_store)
    controller.leader_region = None
    controller.leader_views.clear()
    rig.replicator.primary = None

    async def run() -> None:
        await controller.follow(LeaderInfo("third", "http://third", 2, 4))
        assert controller.leader_region == "third"
        assert rig.replicator.primary is stores["third"]
        assert controller.history == [(1, 1), (2, 4)]
        await controller.follow(LeaderInfo("third", "http://third", 2, 4))
        assert opened == ["third"]  # a leader's store is opened once, then kept
        assert rig.replicator.primary is stores["third"]

    asyncio.run(run())


def test_following_nobody_or_itself_changes_nothing() -> None:
    rig = make_rig(seq=5)
    controller = rig.controller
    before = (controller.leader_region, rig.replicator.primary, list(controller.history))
    calls = list(rig.coord.calls)

    async def run() -> None:
        await controller.follow(None)
        await controller.follow(LeaderInfo(controller.region, "http://self", 1, 1))

    asyncio.run(run())
    assert (controller.leader_region, rig.replicator.primary, controller.history) == before
    assert rig.coord.calls == calls  # not even the history was read


def test_a_follower_that_never_read_the_history_reads_it_for_the_first_epoch() -> None:
    """Before its first leader watch a follower knows no epoch: a record of epoch 1 is judged
    on the history read then, not refused as stale."""
    rig = make_rig(seq=0)
    rig.ensemble.epochs[SHARD] = [(1, 1)]
    controller = rig.controller
    controller.history = []
    assert controller.record_is_current(1, 1)
    assert controller.history == [(1, 1)]
    cast(Any, rig.coord).calls.clear()
    assert controller.record_is_current(2, 1)
    assert "epochs" not in rig.coord.calls  # read once per epoch, not per record


class _CheckedStore(FakeStore):
    """A store that remembers the history it was checked against."""

    def __init__(self, fork: int | None, replicator: Any = None) -> None:
        super().__init__(fork=fork)
        self.checked: list[Any] = []
        self.replicator = replicator
        self.frozen_while_quarantining: list[Any] = []
        self.controller: Any = None
        self.checked_while_quarantining: list[Any] = []

    def first_divergent_seq(self, shard: str, history: Any) -> int | None:
        self.checked.append(list(history))
        return self.fork

    def quarantine_from(self, shard: str, seq: int, why: str) -> int:
        if self.replicator is not None:  # nothing may be applied on the forked tail meanwhile
            self.frozen_while_quarantining.append(self.replicator.frozen)
        if self.controller is not None:  # nor may the tail count as confirmed meanwhile
            self.checked_while_quarantining.append(
                (self.controller.rejoin_checked, self.controller.confirmed_seq())
            )
        return super().quarantine_from(shard, seq, why)


def _checked_rig(
    fork: int | None, history: list[tuple[int, int]], *, seq: int = 5, epoch: int = 1
) -> tuple[Any, _CheckedStore]:
    """A rig at `seq` whose shard store remembers every check against `history`."""
    rig = make_rig(seq=seq, epoch=epoch)
    rig.ensemble.epochs[SHARD] = history
    store = _CheckedStore(fork, rig.replicator)
    store.records = list(rig.app.store.records)
    rig.app.store = store
    return rig, store


def test_a_standby_that_never_rejoined_is_checked_against_the_history_it_follows() -> None:
    """No leader when it started: its store is compared with the epoch history read from the
    coordination; if they agree it counts as rejoined at once, else it rejoins (the tail from
    the fork quarantined, checked again against the history) and then counts, at the fork."""
    for fork, seq_after in ((None, 5), (4, 3)):
        rig, store = _checked_rig(fork, [(1, 1), (2, 4)])
        controller = rig.controller
        controller.role = Role.STANDBY
        controller.rejoin_checked = False
        rig.replicator.stats.last_seen_seq = 5  # what the forked store held

        asyncio.run(controller.follow(LeaderInfo("primary", "http://primary", 2, 4)))
        assert store.checked == [[(1, 1), (2, 4)]] * (1 if fork is None else 2)
        assert controller.rejoin_checked
        assert controller.confirmed_seq() == seq_after
        assert [seq for seq, _ in store.quarantined] == ([] if fork is None else [4, 5])
        # frozen while the tail was set aside, applying again after; the records it knows of
        # are the ones it kept (the leader's 4 and 5 are still to come)
        assert store.frozen_while_quarantining == ([] if fork is None else [True])
        assert rig.replicator.frozen is False
        assert rig.replicator.stats.last_seen_seq == seq_after


def test_only_a_standby_checks_its_store_when_it_follows() -> None:
    """A fenced region (its own rejoin owns the check) or one starting does not compare its
    store with the history on a leader watch: only a standby that never rejoined does."""
    for role in (Role.FENCED, Role.STARTING):
        rig, store = _checked_rig(4, [(1, 1), (2, 4)])
        rig.controller.role = role
        rig.controller.rejoin_checked = False
        asyncio.run(rig.controller.follow(LeaderInfo("primary", "http://primary", 2, 4)))
        assert store.checked == [] and store.quarantined == []
        assert rig.controller.rejoin_checked is False


def test_the_history_is_read_again_only_for_an_epoch_newer_than_any_known_and_once() -> None:
    """Every replicated record is judged: ZooKeeper is asked only for a term the follower has
    not heard of, and once per such term, even if the answer does not know it either."""
    rig = make_rig(seq=40)
    rig.ensemble.epochs[SHARD] = [(1, 1), (2, 30), (3, 50)]
    controller = rig.controller
    asyncio.run(controller.follow(LeaderInfo("primary", "http://primary", 3, 50)))
    rig.coord.calls.clear()
    for seq, epoch in ((60, 3), (40, 2), (10, 1), (61, 3)):
        assert controller.record_is_current(seq, epoch)
    assert "epochs" not in rig.coord.calls
    assert not controller.record_is_current(70, 4)  # no such term: read once ...
    assert not controller.record_is_current(71, 4)  # ... not for every record of it
    assert rig.coord.calls.count("epochs") == 1


def test_a_rejoin_that_sets_records_aside_raises_a_critical_alert() -> None:
    rig = make_rig(seq=10)
    rig.ensemble.epochs[SHARD] = [(1, 1), (2, 8)]
    rig.app.store.fork = 8
    moved = rig.on_writer(lambda _: rig.controller.rejoin())
    assert moved == 3 and rig.app.store.quarantined == [(8, 1), (9, 1), (10, 1)]
    severity, name, message = rig.alerts.sent[-1]
    assert (severity, name) == ("critical", "WALQuarantined")
    assert "3 record(s) from seq 8" in message
    assert rig.controller.history == [(1, 1), (2, 8)]


class _Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, dict[str, Any]]] = []

    def send(self, severity: str, name: str, message: str, labels: Any = None) -> None:
        self.sent.append((severity, name, message, dict(labels or {})))


def test_the_quarantine_alert_labels_say_shard_fork_count_and_region() -> None:
    rig = make_rig(seq=10)
    rig.ensemble.epochs[SHARD] = [(1, 1), (2, 8)]
    rig.app.store.fork = 8
    sink = _Sink()
    object.__setattr__(rig.controller.ctx, "alerts", sink)
    rig.on_writer(lambda _: rig.controller.rejoin())
    assert sink.sent[-1][3] == {"shard": SHARD, "seq": 8, "records": 3, "region": "standby"}


def test_a_rebuild_that_fails_after_a_quarantine_leaves_the_shard_marked_for_recovery() -> None:
    """The hot state still holds what was set aside: until a rebuild succeeds, nothing may
    be served or written on it."""
    rig = make_rig(seq=10)
    rig.ensemble.epochs[SHARD] = [(1, 1), (2, 8)]
    rig.app.store.fork = 8

    def recover() -> None:
        raise OSError("store away")

    object.__setattr__(rig.app, "recover", recover)
    with pytest.raises(OSError):
        rig.on_writer(lambda _: rig.controller.rejoin())
    assert rig.app.needs_recovery is True


def test_a_witness_never_tries_to_fail_over() -> None:
    rig = make_rig(seq=5)
    rig.app.log_only = True
    rig.controller.role = Role.STANDBY
    assert asyncio.run(rig.controller.try_failover("leader gone")) is False
    assert "lock" not in rig.coord.calls and rig.controller.role is Role.STANDBY


def test_a_failover_is_unplanned_unless_said_otherwise() -> None:
    rig = make_rig(seq=5)
    rig.ensemble.epochs[SHARD] = [(1, 1)]
    rig.controller.role = Role.STANDBY
    assert asyncio.run(rig.controller.try_failover("leader gone"))
    severity, name, _ = rig.alerts.sent[-1]
    assert (severity, name) == ("critical", "FailoverCompleted")


def _leaderless(rig: Any, start: int = 1) -> None:
    rig.ensemble.epochs[SHARD] = [(1, start)]
    rig.controller.role = Role.STANDBY
    rig.controller.leader_region = "primary"


def test_a_failover_first_drains_what_the_old_leaders_store_holds() -> None:
    rig = make_rig(seq=100)
    _leaderless(rig)
    rig.replicator.primary_head = 120
    rig.controller.failing_since = rig.controller.ctx.clock() - 4.0
    assert asyncio.run(rig.controller.try_failover("leader gone"))
    assert rig.controller.last_rto_s is not None and 4.0 <= rig.controller.last_rto_s < 5.0
    assert rig.controller.leader_region == "standby" and not rig.replicator.frozen
    assert rig.replicator.catch_ups >= 1 and rig.app.seq == 120
    assert rig.ensemble.epochs[SHARD][-1] == (2, 121)
    record = rig.controller.failovers[-1]
    assert (record.from_region, record.to_region, record.epoch, record.seq) == (
        "primary",
        "standby",
        2,
        120,
    )
    assert record.reason == "leader gone"
    # the new leader publishes from where the old one's records end, counts them as held by
    # a majority (both stores have them), and judges by the history it just wrote
    controller = rig.controller
    assert controller.relay.position == 120 and rig.app.store.relay_position == 120
    assert controller.gate.standby_seq == 120
    assert controller.history == [(1, 1), (2, 121)] and controller.rejoin_checked is False
    controller.stop_relay()


def test_a_failover_that_is_not_this_standbys_to_make_says_so() -> None:
    """try_failover answers False whenever it did not promote (a planned hand-over is
    cleared only on True)."""
    cases = {
        "lock held elsewhere": lambda rig: rig.ensemble.locks.__setitem__(SHARD, "third"),
        "not a standby": lambda rig: setattr(rig.controller, "role", Role.FENCED),
        "somebody leads": lambda rig: rig.ensemble.set_leader(
            SHARD, LeaderInfo("third", "http://third", 1, 1), 0
        ),
    }
    for name, arrange in cases.items():
        rig = make_rig(seq=5)
        _leaderless(rig)
        arrange(rig)
        assert asyncio.run(rig.controller.try_failover("leader gone")) is False, name
        assert rig.ensemble.epochs[SHARD] == [(1, 1)], name


def test_a_lagging_standby_refuses_with_a_critical_alert_naming_its_lag() -> None:
    rig = make_rig(seq=5)
    _leaderless(rig)
    rig.replicator.primary_head = 55
    rig.replicator.frozen = True  # its store is gone: catch_up brings nothing
    rig.replicator.lag_s = 10.0
    sink = _Sink()
    object.__setattr__(rig.controller.ctx, "alerts", sink)
    assert asyncio.run(rig.controller.try_failover("leader gone")) is False
    severity, name, message, labels = sink.sent[-1]
    assert (severity, name) == ("critical", "FailoverRefused")
    assert labels == {"shard": SHARD, "lag_seconds": 10.0, "lag_records": 50}
    assert "lags 10.000s (50 records), more than 2.000s" in message
    assert rig.controller.role is Role.STANDBY and rig.ensemble.epochs[SHARD] == [(1, 1)]


def test_the_promotion_decision_hears_how_long_the_leader_has_been_unhealthy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Among three replicas, one behind another waits a period more before it goes: the
    time counts from the first failed health check (0 s when none failed: planned)."""
    from infra.failover import quorum_promotion

    heard: list[float] = []

    async def not_me(controller: Any, *, unhealthy_for_s: float, planned: bool) -> bool:
        heard.append(unhealthy_for_s)
        return False

    monkeypatch.setattr(quorum_promotion, "ready_to_promote", not_me)
    rig = make_rig(seq=5)
    _leaderless(rig)
    rig.controller.failing_since = None
    assert asyncio.run(rig.controller.try_failover("planned")) is False
    now = rig.controller.ctx.clock()
    rig.controller.failing_since = now - 3.0
    assert asyncio.run(rig.controller.try_failover("leader gone")) is False
    assert heard[0] == 0.0 and 3.0 <= heard[1] < 4.0
    assert rig.controller.role is Role.STANDBY and not rig.replicator.frozen
    assert rig.ensemble.epochs[SHARD] == [(1, 1)]


def test_a_fenced_leader_counts_as_not_rejoined_until_its_rejoin_is_done() -> None:
    rig = make_rig("primary", peers=("standby",), seq=10)
    rig.lead()
    rig.controller.rejoin_checked = True
    rig.controller._fence("deposed")
    assert rig.controller.role is Role.FENCED and rig.controller.rejoin_checked is False
    assert rig.controller.confirmed_seq() is None


async def _run_for(coroutine: Any, seconds: float) -> None:
    task = asyncio.ensure_future(coroutine)
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_a_deposed_leader_waits_failover_after_before_it_retakes() -> None:
    from infra.settings import FailoverSettings

    slow = FailoverSettings(health_interval_s=0.05, failover_after_s=1.0, store_loss_after_s=0.1)
    rig = make_rig("primary", peers=("standby",), seq=10, failover=slow)
    rig.lead()
    rig.ensemble.set_leader(SHARD, None)  # its session expired: nobody leads
    rig.controller._fence("deposed")
    asyncio.run(_run_for(rig.controller.become_standby(may_retake=True), 0.7))
    assert "take_leadership" not in rig.coord.calls and rig.controller.role is Role.FENCED


def test_a_leader_that_resigned_for_its_lost_store_never_retakes_the_shard() -> None:
    """It resigned because it cannot write: nobody leading does not make it the one."""
    rig = make_rig("primary", peers=("standby",), seq=10)
    rig.lead()
    rig.ensemble.set_leader(SHARD, None)

    async def run() -> None:
        await rig.controller.resign_store_lost(0.5)
        await _run_for(asyncio.sleep(0), 0.6)  # several failover_after periods
        task = rig.controller.rejoin_task
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert "take_leadership" not in rig.coord.calls
    assert rig.controller.role is Role.FENCED


def test_a_rejoined_standby_starts_clean_behind_its_new_leader() -> None:
    from tests.unit.test_controller_transitions import _other_leads

    rig = make_rig("primary", peers=("standby",), seq=10)
    rig.lead()
    rig.controller._fence("deposed")
    rig.replicator.frozen = True
    rig.replicator.stats.last_seen_seq = 99  # what it knew of as the leader
    rig.controller.failing_since = 5.0
    _other_leads(rig, 3, 11, "standby")
    asyncio.run(rig.controller.become_standby())
    controller = rig.controller
    assert controller.role is Role.STANDBY and controller.rejoin_checked is True
    assert rig.replicator.stats.last_seen_seq == rig.app.seq == 10
    assert rig.replicator.frozen is False and controller.failing_since is None
    assert rig.demoted == [10] and controller.leader_region == "standby"


def test_a_retake_with_the_lock_held_elsewhere_does_not_happen() -> None:
    rig = make_rig("primary", peers=("standby",), seq=10)
    rig.lead()
    rig.controller._fence("deposed")
    rig.ensemble.set_leader(SHARD, None)
    rig.ensemble.locks[SHARD] = "third"
    assert asyncio.run(rig.controller.retake(5.0)) is False
    assert "take_leadership" not in rig.coord.calls and rig.controller.role is Role.FENCED


def _deposed_alone(rig: Any) -> None:
    rig.lead()
    rig.controller._fence("deposed")
    rig.ensemble.set_leader(SHARD, None)


def test_a_retake_happens_only_when_nobody_leads_and_its_epoch_is_the_last() -> None:
    from tests.unit.test_controller_transitions import _other_leads

    rig = make_rig("primary", peers=("standby",), seq=10)
    _deposed_alone(rig)
    _other_leads(rig, 5, 11, "standby")
    assert asyncio.run(rig.controller.retake(5.0)) is False  # somebody leads
    rig = make_rig("primary", peers=("standby",), seq=10)
    _deposed_alone(rig)
    rig.ensemble.epochs[SHARD].append((9, 11))  # a later term was taken elsewhere
    assert asyncio.run(rig.controller.retake(5.0)) is False
    assert "take_leadership" not in rig.coord.calls and rig.controller.role is Role.FENCED


def test_a_retake_publishes_its_own_tail_and_waits_for_a_follower_to_confirm_it() -> None:
    """What it wrote before it was fenced was confirmed by nobody: the relay goes on from its
    own position, and the gate does not count those records as held by a majority."""
    rig = make_rig("primary", peers=("standby",), seq=10)
    _deposed_alone(rig)
    rig.controller.relay.position = 7  # published up to 7 before the fence
    rig.controller.gate.standby_seq = 6
    assert asyncio.run(_retake_then_stop(rig))
    assert rig.controller.role is Role.LEADER
    assert rig.controller.relay.position == 7 and rig.app.store.relay_position == 0
    assert rig.controller.gate.standby_seq == 6


async def _retake_then_stop(rig: Any) -> bool:
    done = await rig.controller.retake(5.0)
    rig.controller.stop_relay()
    await asyncio.sleep(0.02)
    return bool(done)


def test_a_retake_that_fails_says_so_and_stays_fenced() -> None:
    rig = make_rig("primary", peers=("standby",), seq=10)
    _deposed_alone(rig)
    rig.coord.fail_next("take_leadership")
    assert asyncio.run(rig.controller.retake(5.0)) is False
    assert rig.controller.role is Role.FENCED and not rig.replicator.frozen


def test_a_retake_whose_rebuild_fails_leaves_the_shard_marked_for_recovery() -> None:
    rig = make_rig("primary", peers=("standby",), seq=10)
    _deposed_alone(rig)

    def recover() -> None:
        raise OSError("store away")

    object.__setattr__(rig.app, "recover", recover)
    assert asyncio.run(rig.controller.retake(5.0)) is False
    assert rig.app.needs_recovery is True


def test_a_health_round_asks_the_leaders_health_and_counts_failures_from_the_first() -> None:
    """The failover_after timer starts at the first failed check and stops at a good one:
    a leader answering 200 never starts it."""
    from tests.unit.test_controller_transitions import _other_leads

    rig = make_rig(seq=5)
    _other_leads(rig, 1, 1)
    rig.controller.role = Role.STANDBY
    asked: list[str] = []
    answers = [200, 503, 503, 200]

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(answers[len(asked) - 1])

    async def rounds() -> list[float | None]:
        seen: list[float | None] = []
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            for _ in answers:
                await rig.controller.check(client)
                seen.append(rig.controller.failing_since)
        return seen

    seen = asyncio.run(rounds())
    assert asked == ["/health"] * 4
    assert seen[0] is None and seen[1] is not None and seen[2] == seen[1] and seen[3] is None
    assert rig.controller.role is Role.STANDBY and "lock" not in rig.coord.calls


class _DeadProbe:
    async def check(self) -> None:
        raise OSError("connection refused")


def test_a_leader_whose_store_stops_answering_resigns_after_store_loss_after() -> None:
    rig = make_rig("primary", peers=("standby",), seq=10)
    rig.lead()
    sink = _Sink()
    object.__setattr__(rig.controller.ctx, "alerts", sink)
    rig.controller.store_probe = cast(Any, _DeadProbe())

    async def run() -> None:
        await rig.controller.check_store()  # the first failure: the timer starts
        assert rig.controller.role is Role.LEADER
        assert rig.controller.store_failing_since is not None
        await asyncio.sleep(0.05)
        await rig.controller.check_store()  # 0.05 s < store_loss_after (0.1 s)
        assert rig.controller.role is Role.LEADER
        await asyncio.sleep(0.06)
        await rig.controller.check_store()
        assert rig.controller.role is Role.FENCED
        assert rig.controller.store_failing_since is None
        task = rig.controller.rejoin_task
        assert task is not None  # it waits, as a standby, for its store and a leader
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
    severity, name, message, labels = sink.sent[-1]
    assert (severity, name) == ("critical", "LeaderStoreLost")
    assert labels == {"shard": SHARD, "region": "primary"}
    assert "did not answer for 0.1" in message and "standby takes over" in message
    assert rig.ensemble.handovers.get(SHARD) == "standby"


def test_a_retake_that_fails_after_taking_the_leader_node_gives_it_back_and_stays_fenced() -> None:
    """A deposed leader that could not finish its retake has not rejoined: it must not come
    back as a standby that skipped its quarantine check."""
    rig = make_rig("primary", peers=("standby",), seq=10)
    _deposed_alone(rig)
    rig.controller.failed_promotions = 1
    assert asyncio.run(rig.controller.retake(5.0)) is False
    assert rig.controller.role is Role.FENCED
    assert rig.ensemble.leaders.get(SHARD) is None and "resign" in rig.coord.calls


class _FlakyProbe:
    def __init__(self) -> None:
        self.fail = True
        self.calls = 0

    async def check(self) -> None:
        self.calls += 1
        if self.fail:
            raise OSError("connection refused")


def test_a_store_that_answers_again_stops_the_store_loss_timer() -> None:
    rig = make_rig("primary", peers=("standby",), seq=10)
    rig.lead()
    probe = _FlakyProbe()
    rig.controller.store_probe = cast(Any, probe)

    async def run() -> None:
        await rig.controller.check_store()
        assert rig.controller.store_failing_since is not None
        probe.fail = False
        await rig.controller.check_store()

    asyncio.run(run())
    assert rig.controller.store_failing_since is None and rig.controller.role is Role.LEADER


def test_only_a_leader_times_its_store_and_a_new_term_starts_the_timer_afresh() -> None:
    """A standby does not probe the leader's store loss (its own timer stays unset); once it
    leads, a failing store starts the timer at that failure."""
    rig = make_rig("primary", peers=("standby",), seq=10)
    probe = _FlakyProbe()
    rig.controller.store_probe = cast(Any, probe)
    rig.controller.store_failing_since = 1.0  # left from an earlier term
    rig.controller.role = Role.STANDBY

    async def run() -> None:
        await rig.controller.check_store()
        assert rig.controller.store_failing_since is None and probe.calls == 0
        rig.lead()
        await rig.controller.check_store()

    asyncio.run(run())
    assert rig.controller.role is Role.LEADER and probe.calls == 1
    since = rig.controller.store_failing_since
    assert since is not None and abs(since - rig.controller.ctx.clock()) < 1.0


def test_a_planned_switchover_warns_and_a_failed_one_keeps_the_hand_over_request() -> None:
    rig = make_rig(seq=5)
    _leaderless(rig)
    assert asyncio.run(rig.controller.try_failover("switchover", planned=True))
    assert rig.alerts.sent[-1][:2] == ("warning", "SwitchoverCompleted")
    rig.controller.stop_relay()

    rig = make_rig(seq=5)
    _leaderless(rig)
    rig.ensemble.handovers[SHARD] = "standby"
    rig.ensemble.locks[SHARD] = "third"  # it cannot take the shard now

    async def round_() -> None:
        async with rig.client() as client:
            await rig.controller.check(client)

    asyncio.run(round_())
    assert rig.ensemble.handovers.get(SHARD) == "standby"  # asked again next round


def test_a_history_read_that_hangs_costs_one_bounded_wait_then_a_pause() -> None:
    """ZooKeeper away: a record of a new epoch waits HISTORY_READ_WAIT_S at most for the
    history (on a daemon thread of its own, left behind), is judged on what is known (stale:
    it comes again), and the read is not tried again for every record until
    HISTORY_RETRY_S has passed; then it is, and the answer is used."""
    rig = make_rig(seq=10)
    controller = rig.controller
    controller.history = [(1, 1)]
    release = threading.Event()
    asked: list[str] = []
    real_epochs = rig.coord.epochs

    def hanging_epochs(shard: str) -> list[tuple[int, int]]:
        asked.append(shard)
        release.wait(10.0)
        return [(1, 1), (2, 11)]

    rig.coord.epochs = hanging_epochs  # type: ignore[method-assign]
    started = time.monotonic()
    assert not controller.record_is_current(11, 2)  # unread: stale for now
    waited = time.monotonic() - started
    assert HISTORY_READ_WAIT_S <= waited < HISTORY_READ_WAIT_S + 2.0
    reader = [t for t in threading.enumerate() if t.name == f"epochs-{SHARD}"]
    assert len(reader) == 1 and reader[0].daemon  # never holds the process at exit
    assert controller._history_retry_at >= started + HISTORY_RETRY_S
    assert not controller.record_is_current(12, 2)  # within the pause: no second read
    assert asked == [SHARD] and controller.history == [(1, 1)]
    release.set()
    reader[0].join(5.0)
    rig.coord.epochs = real_epochs  # type: ignore[method-assign]
    rig.ensemble.epochs[SHARD] = [(1, 1), (2, 11)]
    controller._history_retry_at = time.monotonic()  # the pause is over (at its very end)
    assert controller.record_is_current(11, 2)
    assert controller.history == [(1, 1), (2, 11)]


def test_a_follower_confirms_for_the_term_it_follows_once_its_rejoin_check_is_done() -> None:
    """A leader promoted by a switchover has written nothing yet: its follower's newest
    record is of the older term. Once the follower's store is checked against the leader's
    history, its confirmations are of the leader's term (counted); before that, and in any
    other role, they stay of its newest record's epoch (an older term's: never counted)."""
    rig = make_rig(seq=5, epoch=2)
    rig.ensemble.epochs[SHARD] = [(1, 1), (2, 4), (3, 6)]
    controller = rig.controller
    controller.role = Role.STANDBY
    controller.rejoin_checked = False
    assert controller.confirmation_epoch() == 2
    asyncio.run(controller.follow(LeaderInfo("primary", "http://primary", 3, 6)))
    assert controller.followed_epoch == 3 and controller.rejoin_checked
    assert controller.confirmation_epoch() == 3
    rig.app.epoch = 4  # a record of a newer term than the node it followed: that term
    assert controller.confirmation_epoch() == 4
    rig.app.epoch = 2
    for role in (Role.FENCED, Role.PROMOTING, Role.LEADER, Role.STARTING):
        controller.role = role
        assert controller.confirmation_epoch() == 2, role
    controller.role = Role.STANDBY
    controller.rejoin_checked = False  # a rejoin under way: its tail may still be set aside
    assert controller.confirmation_epoch() == 2


def test_a_standby_checks_its_store_again_when_a_new_term_begins() -> None:
    """A standby following epoch 2 applied the deposed leader's last push (seq 5, epoch 2)
    before it heard that epoch 3 starts at 5: on the new leader's node its store is compared
    with the new history, the tail set aside, and only then does it count as checked; the
    same leader seen again costs no check."""
    rig, store = _checked_rig(None, [(1, 1), (2, 3)], epoch=2)
    controller = rig.controller
    controller.role = Role.STANDBY
    store.controller = controller

    async def run() -> None:
        await controller.follow(LeaderInfo("primary", "http://primary", 2, 3))
        assert len(store.checked) == 1 and controller.rejoin_checked
        await controller.follow(LeaderInfo("primary", "http://primary", 2, 3))
        assert len(store.checked) == 1  # the same term: nothing to check again
        rig.ensemble.epochs[SHARD] = [(1, 1), (2, 3), (3, 5)]
        store.fork = 5
        await controller.follow(LeaderInfo("third", "http://third", 3, 5))

    asyncio.run(run())
    assert store.checked[1] == [(1, 1), (2, 3), (3, 5)]
    assert [seq for seq, _ in store.quarantined] == [5]
    assert store.checked_while_quarantining == [(False, None)]  # not counted while checked
    assert controller.rejoin_checked and controller.confirmation_epoch() == 3
    assert controller.confirmed_seq() == 4


def test_a_standby_that_followed_nobody_yet_confirms_for_its_own_newest_record() -> None:
    """The epoch of the leader followed starts at 0 (none): a checked standby of a shard
    nobody led yet confirms for its own newest record's epoch, and its first leader, whatever
    its epoch, is a new term to check against."""
    rig = make_rig(seq=0, epoch=0)
    controller = rig.controller
    controller.role = Role.STANDBY
    controller.rejoin_checked = True
    assert controller.followed_epoch == 0 and controller.confirmation_epoch() == 0
