"""Every transition of the failover controller, as a table: (role, event) -> (new role, actions).

Each row drives one ShardController against the in-memory coordination
(tests/unit/fake_coordination.py), the way Patroni's test_ha.py drives its HA loop
against a mocked DCS: no servers, a fraction of a second each. The actions are the
coordination calls made and the alerts sent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from infra.coordination.base import LeaderInfo
from infra.failover.state import Role
from tests.unit.controller_harness import SHARD, Rig, make_rig
from tests.unit.fake_coordination import FakeCoordination

Event = Callable[[Rig], Awaitable[None]]


@dataclass(frozen=True)
class Row:
    name: str
    region: str  # "standby": the rig starts as a standby; "primary": as the leader
    event: Event
    role: Role
    actions: frozenset[str] = frozenset()  # coordination calls and alerts that must happen
    never: frozenset[str] = frozenset()  # ... and those that must not
    leader: str | None = "?"  # who holds the leader node after it ("?": not checked)


def _gone(rig: Rig, *, epochs: list[tuple[int, int]] | None = None) -> None:
    """The old leader's session expired: its node is gone, its epoch stays in the history."""
    rig.ensemble.epochs[SHARD] = epochs or [(1, 1)]
    rig.controller.role = Role.STANDBY
    rig.controller.leader_region = "primary"


def _other_leads(rig: Rig, epoch: int, start: int, region: str = "primary") -> None:
    other = FakeCoordination(rig.ensemble, region)
    rig.ensemble.epochs.setdefault(SHARD, []).append((epoch, start))
    info = LeaderInfo(region, f"http://{region}", epoch, start)
    rig.ensemble.set_leader(SHARD, info, other.session)


async def _rounds(rig: Rig, count: int = 2) -> None:
    """Health rounds `failover_after` apart: the second one may fail over."""
    async with rig.client() as client:
        for _ in range(count):
            await rig.controller.check(client)
            await asyncio.sleep(rig.controller.ctx.failover.failover_after_s + 0.02)


# -- events on a standby ------------------------------------------------------------------


async def leader_healthy(rig: Rig) -> None:
    _other_leads(rig, 1, 1)
    rig.controller.role = Role.STANDBY
    await _rounds(rig)


async def leader_unhealthy_but_its_session_lives(rig: Rig) -> None:
    _other_leads(rig, 1, 1)
    rig.controller.role = Role.STANDBY
    rig.leader_health = 503
    await _rounds(rig, 3)


async def leader_gone_once(rig: Rig) -> None:
    _gone(rig)
    async with rig.client() as client:
        await rig.controller.check(client)  # failing since now: not yet `failover_after`


async def leader_gone_for_failover_after(rig: Rig) -> None:
    _gone(rig)
    await _rounds(rig)


async def lock_held_elsewhere(rig: Rig) -> None:
    _gone(rig)
    rig.ensemble.locks[SHARD] = "third"
    await _rounds(rig)


async def lagging_standby(rig: Rig) -> None:
    _gone(rig)
    rig.replicator.primary_head = rig.app.seq + 50
    rig.replicator.frozen = True  # its store is gone: catch_up brings nothing
    rig.replicator.lag_s = 10.0
    await _rounds(rig)
    assert not rig.replicator.frozen  # thawed: it goes on applying what comes


async def another_region_won_the_race(rig: Rig) -> None:
    _gone(rig)
    rig.coord.hooks["refresh_leader"] = lambda: _other_leads(rig, 2, rig.app.seq + 1, "third")
    await _rounds(rig)


async def failed_step_after_take_leadership(rig: Rig) -> None:
    _gone(rig)
    rig.coord.fail_next("epochs")  # the read-back of the history
    await _rounds(rig)
    assert rig.ensemble.leaders.get(SHARD) is None and rig.app.epoch == 1


async def failed_step_then_next_round(rig: Rig) -> None:
    await failed_step_after_take_leadership(rig)
    await _rounds(rig, 1)  # failing_since kept: this round promotes


async def injected_failure_after_take_leadership(rig: Rig) -> None:
    """EXDR_FAULT_FAILED_PROMOTIONS=1: the first promotion fails, the next round's does not."""
    _gone(rig)
    rig.controller.failed_promotions = 1
    await _rounds(rig)
    assert rig.controller.role is Role.STANDBY and rig.ensemble.leaders.get(SHARD) is None
    await _rounds(rig, 1)


async def session_expiry_during_promotion(rig: Rig) -> None:
    _gone(rig)
    rig.wire_deposal()
    rig.coord.hooks["epochs"] = rig.coord.expire_session
    await _rounds(rig)
    await asyncio.sleep(0.05)
    assert not rig.controller.accepting()
    _stop(rig)


async def planned_handover_to_us(rig: Rig) -> None:
    _gone(rig)
    rig.ensemble.handovers[SHARD] = "standby"
    async with rig.client() as client:
        await rig.controller.check(client)  # at once: no `failover_after` wait
    assert rig.alerts.names[-1] == "SwitchoverCompleted"


async def history_disagrees_with_store(rig: Rig) -> None:
    _gone(rig)
    # another writer appended to the history between our take and its read-back
    rig.coord.hooks["epochs"] = lambda: rig.ensemble.epochs[SHARD].__setitem__(
        -1, (rig.ensemble.epochs[SHARD][-1][0], 5)
    )
    await _rounds(rig)


# -- events on a leader -------------------------------------------------------------------


async def deposed_leader_wakes_up(rig: Rig) -> None:
    """Paused across a failover: another region leads at epoch 3 from seq 8; it wrote 9, 10."""
    rig.lead()
    rig.wire_deposal()
    rig.app.store.fork = 8
    rig.coord.expire_session()
    _other_leads(rig, rig.app.epoch + 1, 8, "standby")
    await asyncio.sleep(0.5)
    assert rig.app.store.quarantined == [(8, 1), (9, 1), (10, 1)]
    assert rig.demoted == [7]


async def deposed_nobody_leads_own_epoch_last(rig: Rig) -> None:
    rig.lead()
    rig.wire_deposal()
    rig.coord.expire_session()
    await asyncio.sleep(0.6)
    assert "retook the shard" in rig.alerts.sent[-1][2]


async def deposed_nobody_leads_other_epoch_after(rig: Rig) -> None:
    rig.lead()
    rig.wire_deposal()
    rig.coord.expire_session()
    rig.ensemble.epochs[SHARD].append((rig.app.epoch + 1, rig.app.seq + 1))  # took, then died
    await asyncio.sleep(0.6)
    _stop(rig)


async def hand_over_timeout(rig: Rig) -> None:
    rig.lead()
    with pytest.raises(TimeoutError, match="did not confirm"):
        await rig.controller.hand_over("standby", timeout_s=0.1)
    assert rig.controller.accepting()


async def deposed_during_hand_over(rig: Rig) -> None:
    rig.lead()
    rig.wire_deposal()

    async def expire_soon() -> None:
        await asyncio.sleep(0.05)
        rig.coord.expire_session()

    expiry = asyncio.ensure_future(expire_soon())
    with pytest.raises(TimeoutError, match="deposed"):
        await rig.controller.hand_over("standby", timeout_s=0.3)
    await expiry
    assert not rig.controller.accepting()
    _stop(rig)


async def hand_over_confirmed(rig: Rig) -> None:
    rig.lead()
    rig.controller.gate.standby_stored(rig.app.seq, "standby")  # the target's own confirmation
    # the target holds every record already: it goes at once, not when the wait runs out
    # (a wait for one record more would still hand over, a minute late)
    done = await asyncio.wait_for(rig.controller.hand_over("standby", timeout_s=60.0), 10.0)
    assert done == {
        "shard": SHARD,
        "from_region": "primary",
        "to_region": "standby",
        "seq": rig.app.seq,
        "drained_in_s": done["drained_in_s"],
    }
    assert 0 <= done["drained_in_s"] < 10.0  # how long the drain took, not a clock reading
    assert rig.ensemble.handovers[SHARD] == "standby"
    assert rig.controller.rejoin_task is not None  # it follows the target: a task to stop
    _stop(rig)


async def store_lost(rig: Rig) -> None:
    rig.lead()

    class DeadProbe:
        async def check(self) -> None:
            raise OSError("connection refused")

    rig.controller.store_probe = DeadProbe()  # type: ignore[assignment]
    await rig.controller.check_store()
    await asyncio.sleep(rig.controller.ctx.failover.store_loss_after_s + 0.02)
    await rig.controller.check_store()
    _stop(rig)


async def health_round_on_leader(rig: Rig) -> None:
    rig.lead()
    await _rounds(rig)


def _stop(rig: Rig) -> None:
    task = rig.controller.rejoin_task
    if task is not None:
        task.cancel()


ROWS = [
    Row("standby, leader healthy: nothing", "standby", leader_healthy, Role.STANDBY,
        never=frozenset({"lock", "take_leadership"}), leader="primary"),
    Row("standby, leader unhealthy, its session alive: waits", "standby",
        leader_unhealthy_but_its_session_lives, Role.STANDBY,
        never=frozenset({"lock", "take_leadership"}), leader="primary"),
    Row("standby, leader node gone once: waits failover_after", "standby", leader_gone_once,
        Role.STANDBY, never=frozenset({"lock", "take_leadership"}), leader=None),
    Row("standby, leader gone for failover_after: promotes", "standby",
        leader_gone_for_failover_after, Role.LEADER,
        actions=frozenset({"lock", "take_leadership", "FailoverCompleted"}), leader="standby"),
    Row("standby, lock contention: no promotion", "standby", lock_held_elsewhere, Role.STANDBY,
        actions=frozenset({"lock"}), never=frozenset({"take_leadership"}), leader=None),
    Row("standby, lagging: refused, the shard stays down", "standby", lagging_standby,
        Role.STANDBY, actions=frozenset({"FailoverRefused"}),
        never=frozenset({"take_leadership"}), leader=None),
    Row("standby, another region won the race: follows", "standby",
        another_region_won_the_race, Role.STANDBY, never=frozenset({"take_leadership"}),
        leader="third"),
    Row("standby, a step after take_leadership fails: resigns", "standby",
        failed_step_after_take_leadership, Role.STANDBY,
        actions=frozenset({"take_leadership", "resign"}), never=frozenset({"FailoverCompleted"}),
        leader=None),
    Row("standby, after a failed promotion the next round promotes", "standby",
        failed_step_then_next_round, Role.LEADER,
        actions=frozenset({"resign", "FailoverCompleted"}), leader="standby"),
    Row("standby, injected failure after take_leadership, then a round promotes", "standby",
        injected_failure_after_take_leadership, Role.LEADER,
        actions=frozenset({"resign", "FailoverCompleted"}), leader="standby"),
    Row("standby, the history disagrees with the store: resigns", "standby",
        history_disagrees_with_store, Role.STANDBY, actions=frozenset({"resign"}),
        never=frozenset({"FailoverCompleted"}), leader=None),
    Row("standby, session expires during promotion: fenced", "standby",
        session_expiry_during_promotion, Role.FENCED, actions=frozenset({"take_leadership"}),
        leader=None),
    Row("standby, planned handover to it: promotes at once", "standby", planned_handover_to_us,
        Role.LEADER, actions=frozenset({"take_leadership", "clear_handover"}),
        leader="standby"),
    Row("leader, health round: nothing", "primary", health_round_on_leader, Role.LEADER,
        never=frozenset({"lock", "handover_target"}), leader="primary"),
    Row("leader deposed, wakes up: quarantines its tail, follows", "primary",
        deposed_leader_wakes_up, Role.STANDBY, actions=frozenset({"WALQuarantined"}),
        leader="standby"),
    Row("leader deposed, nobody leads, its epoch last: retakes", "primary",
        deposed_nobody_leads_own_epoch_last, Role.LEADER,
        actions=frozenset({"lock", "take_leadership", "FailoverCompleted"}), leader="primary"),
    Row("leader deposed, nobody leads, a later epoch exists: waits", "primary",
        deposed_nobody_leads_other_epoch_after, Role.FENCED,
        never=frozenset({"take_leadership"}), leader=None),
    Row("leader, hand-over not confirmed in time: leads on", "primary", hand_over_timeout,
        Role.LEADER, never=frozenset({"resign", "request_handover"}), leader="primary"),
    Row("handing over, deposed meanwhile: does not lead again", "primary",
        deposed_during_hand_over, Role.FENCED, never=frozenset({"request_handover"}),
        leader=None),
    Row("leader, hand-over confirmed: resigns for the target", "primary", hand_over_confirmed,
        Role.FENCED, actions=frozenset({"request_handover", "resign"}), leader=None),
    Row("leader, its store lost: fences, hands over, resigns", "primary", store_lost,
        Role.FENCED, actions=frozenset({"request_handover", "resign", "LeaderStoreLost"}),
        leader=None),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_transition(row: Row) -> None:
    peers = ("standby",) if row.region == "primary" else ("primary",)
    rig = make_rig(row.region, peers=peers, seq=10 if row.region == "primary" else 7)

    async def scenario() -> None:
        try:
            await row.event(rig)
        finally:
            task = rig.controller.rejoin_task
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    asyncio.run(scenario())
    done = set(rig.coord.calls) | set(rig.alerts.names)
    assert rig.controller.role is row.role
    assert row.actions <= done, f"missing {row.actions - done}"
    assert not row.never & done, f"unexpected {row.never & done}"
    if row.leader != "?":
        entry = rig.ensemble.leaders.get(SHARD)
        assert (entry[0].region if entry else None) == row.leader
    assert rig.coord.on_loop == []  # nothing waited on the network on the event loop
    if rig.controller.role is Role.LEADER:
        epoch, start = rig.ensemble.epochs[SHARD][-1]
        assert (epoch, start) == (rig.app.epoch, rig.app.seq + 1)
        assert rig.controller.accepting()
    else:
        assert not rig.controller.accepting()
        assert not rig.replicator.frozen or row.role is Role.FENCED


def test_a_follower_counts_only_records_of_the_epoch_owning_their_seq() -> None:
    """The deposed-epoch filter: once the history says epoch 3 owns seq 50 on, a record of
    epoch 2 at seq 60 (the deposed leader's tail) is stale; below the fork it is current."""
    rig = make_rig(seq=40)
    rig.ensemble.epochs[SHARD] = [(1, 1), (2, 30), (3, 50)]

    async def follow() -> None:
        await rig.controller.follow(LeaderInfo("primary", "http://primary", 3, 50))

    asyncio.run(follow())
    assert not rig.controller.record_is_current(60, 2)
    assert rig.controller.record_is_current(60, 3)
    assert rig.controller.record_is_current(45, 2)
    assert not rig.controller.record_is_current(45, 3)
    assert not rig.controller.record_is_current(45, 1)
    assert rig.controller.record_is_current(50, 3)
    assert not rig.controller.record_is_current(50, 2)


def test_a_leader_whose_lease_lapsed_accepts_nothing_before_it_hears_it_was_deposed() -> None:
    """Cut off from the coordination: the role still says leader, the lease decides."""
    rig = make_rig("primary", peers=("standby",), seq=10)
    rig.lead()
    assert rig.controller.accepting()
    rig.ensemble.clock.advance(rig.coord.lease_s)
    assert rig.controller.role is Role.LEADER
    assert not rig.controller.accepting()


def test_a_record_of_a_term_the_follower_has_not_heard_of_is_judged_on_a_fresh_history() -> None:
    """A new leader's first records may reach a follower (the witness: the promoted standby
    pushes to it at once) before the follower's leader watch has re-read the epoch history.
    The record of an epoch newer than any it knows is judged on the history read again, not
    dropped as stale: else the new term's first acknowledgements wait for the topic's slower
    path; a record the fresh history does not support is still refused."""
    rig = make_rig(seq=40)
    rig.ensemble.epochs[SHARD] = [(1, 1), (2, 30)]

    async def follow() -> None:
        await rig.controller.follow(LeaderInfo("primary", "http://primary", 2, 30))

    asyncio.run(follow())
    rig.ensemble.epochs[SHARD].append((3, 50))  # the standby was promoted meanwhile
    assert rig.controller.record_is_current(50, 3)
    assert not rig.controller.record_is_current(50, 2)  # the deposed leader's tail
    assert not rig.controller.record_is_current(60, 4)  # no such term, even read again
    assert not rig.controller.record_is_current(45, 3)  # before the term began


def test_a_standby_that_never_rejoined_quarantines_a_divergent_tail_when_it_follows() -> None:
    """A node that started as a standby with nobody leading took its role without a rejoin;
    its store holds seqs 5-7 of epoch 1 that the history gives to epoch 2 (another region's
    term from seq 5). When it follows the leader, those records are set aside as a deposed
    leader's would be: else the replicator drops the real records at seqs it already holds,
    and the store stays forked for good."""
    rig = make_rig(seq=7)
    rig.controller.role = Role.STANDBY  # no leader when its node started: no rejoin
    rig.ensemble.epochs[SHARD] = [(1, 1), (2, 5)]
    rig.app.store.fork = 5

    async def follow() -> None:
        await rig.controller.follow(LeaderInfo("primary", "http://primary", 2, 5))

    asyncio.run(follow())
    assert rig.app.store.quarantined == [(5, 1), (6, 1), (7, 1)]
    assert "WALQuarantined" in rig.alerts.names
    assert rig.controller.rejoin_checked
    assert not rig.replicator.frozen


def test_a_slow_coordination_holds_the_writer_no_longer_than_the_bound() -> None:
    """The re-read of the history runs on the writer thread (where records are applied): a
    ZooKeeper that does not answer (reconnecting, a member lost) must not stall every commit
    behind it. The record is judged on the history known (stale: it comes again), and the
    re-read is tried again later, not for every record."""
    import time

    rig = make_rig(seq=40)
    rig.ensemble.epochs[SHARD] = [(1, 1), (2, 30)]

    async def follow() -> None:
        await rig.controller.follow(LeaderInfo("primary", "http://primary", 2, 30))

    asyncio.run(follow())
    rig.ensemble.epochs[SHARD].append((3, 50))
    rig.coord.hooks["epochs"] = lambda: time.sleep(3.0)
    started = time.monotonic()
    assert not rig.controller.record_is_current(50, 3)
    assert not rig.controller.record_is_current(51, 3)  # no second wait at once
    assert time.monotonic() - started < 1.5
    time.sleep(2.1)  # the retry pause (monotonic): the hook ran once, the next read answers
    assert rig.controller.record_is_current(52, 3)
