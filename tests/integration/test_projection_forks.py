"""Read models after a fork: a deposed leader's unconfirmed tail never stays in the views.

The scenario of every failover with a lost tail: the leader (epoch 1) commits 104-105 and its
relay publishes them at once, no follower stores them, the leader dies; the new leader (epoch 2)
writes its own records at 104 and on. Both forks link to record 103, so the hash chain alone
cannot tell them apart: the views must follow the store of their region, keyed on
(epoch, seq, checksum), never on seq alone.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, cast

import pytest
from sqlalchemy import select

from application.shard.app import ShardApp
from application.wal.records import WalRecord
from domain.commands import Deposit
from infra.bootstrap import make_projector, make_shard_app
from infra.node.projection import NodeProjection, ShardProjection
from infra.settings import Settings
from projections.agents import Delivery, ProjectorWorker
from projections.read_models.confirmed import ConfirmedPoint, read_confirmed, record_confirmed
from projections.read_models.models import BalanceRow
from projections.read_models.projector import ReadModelProjector

pytestmark = pytest.mark.integration

SHARD = "shard-1"
CONFIRMED = 103  # what a majority held when epoch 1 ended


def _commit(app: ShardApp, account: str, count: int) -> None:
    results = app.execute_batch([Deposit(account, Decimal(n + 1)) for n in range(count)])
    assert not any(isinstance(r, Exception) for r in results)


def _balances(projector: ReadModelProjector) -> dict[str, Decimal]:
    with projector.sessions() as session:
        rows = session.scalars(select(BalanceRow).where(BalanceRow.shard == SHARD))
        return {r.account: r.balance for r in rows}


def test_a_projected_deposed_tail_is_rolled_back_to_the_new_leaders_records(
    settings: Settings, dsn: str
) -> None:
    projector = make_projector(settings, dsn=dsn)
    deposed = make_shard_app(settings, SHARD, dsn=dsn, epoch=1)
    deposed.recover()
    _commit(deposed, "acct-real", CONFIRMED)
    projector.apply(SHARD, (), through=CONFIRMED)
    _commit(deposed, "acct-ghost", 2)
    tail = list(deposed.store.read_records(SHARD, CONFIRMED, 10))
    assert [(r.seq, r.epoch) for r in tail] == [(104, 1), (105, 1)]
    # the relay published the deposed tail right after its local commit, the views took it
    projector.apply(SHARD, tail)
    assert "acct-ghost" in _balances(projector)
    # the rejoin sets 104-105 aside; epoch 2 owns seq 104 on
    assert deposed.store.quarantine_from(SHARD, CONFIRMED + 1, "diverged at seq 104") == 2
    deposed.close()
    leader = make_shard_app(settings, SHARD, dsn=dsn)
    leader.recover()
    leader.epoch = 2
    _commit(leader, "acct-new", 3)
    fresh = list(leader.store.read_records(SHARD, CONFIRMED, 10))
    assert [(r.seq, r.epoch) for r in fresh] == [(104, 2), (105, 2), (106, 2)]
    # both forks link to record 103: the chain alone does not tell them apart
    assert tail[0].prev_checksum == fresh[0].prev_checksum
    try:
        # the new leader's records at the same seqs: a fork, to be found and rolled back
        projector.apply(SHARD, fresh[:2])
        balances = _balances(projector)
        assert "acct-ghost" not in balances, "the deposed tail is still in the views"
        assert balances.get("acct-new") == Decimal(3), "the new leader's records are missing"
        projector.apply(SHARD, fresh[2:])
        balances = _balances(projector)
        assert balances["acct-new"] == Decimal(6)
        assert balances["acct-real"] == Decimal(CONFIRMED * (CONFIRMED + 1) // 2)
        assert projector.tracked(SHARD) == 106
    finally:
        leader.close()


def _forked_store(
    settings: Settings, dsn: str
) -> tuple[list[WalRecord], list[WalRecord], list[WalRecord]]:
    """A region's store after the rejoin: 1..103 of epoch 1, then 104'..106' of epoch 2.
    Returns (1..103, the deposed tail 104-105 as the relay published it, 104'..106')."""
    deposed = make_shard_app(settings, SHARD, dsn=dsn, epoch=1)
    deposed.recover()
    _commit(deposed, "acct-real", CONFIRMED)
    _commit(deposed, "acct-ghost", 2)
    agreed = list(deposed.store.read_records(SHARD, 0, CONFIRMED))
    tail = list(deposed.store.read_records(SHARD, CONFIRMED, 10))
    assert deposed.store.quarantine_from(SHARD, CONFIRMED + 1, "diverged at seq 104") == 2
    deposed.close()
    leader = make_shard_app(settings, SHARD, dsn=dsn)
    leader.recover()
    leader.epoch = 2
    _commit(leader, "acct-new", 3)
    fresh = list(leader.store.read_records(SHARD, CONFIRMED, 10))
    leader.close()
    assert [(r.seq, r.epoch) for r in tail + fresh] == [
        (104, 1),
        (105, 1),
        (104, 2),
        (105, 2),
        (106, 2),
    ]
    return agreed, tail, fresh


def _deliveries(records: list[WalRecord]) -> list[Delivery]:
    return [Delivery(r.shard_id, r.seq, r) for r in records]


def _confirm(projector: ReadModelProjector, record: WalRecord) -> None:
    """What the region's node records once a majority holds `record`."""
    point = ConfirmedPoint(SHARD, record.seq, record.epoch, record.checksum)
    record_confirmed(projector.sessions, point)


def test_the_worker_projects_only_up_to_the_confirmed_record(settings: Settings, dsn: str) -> None:
    agreed, tail, fresh = _forked_store(settings, dsn)
    projector = make_projector(settings, dsn=dsn)
    worker = ProjectorWorker(projector, (SHARD,))
    # the relay published 1..105 before anybody confirmed 104-105; nothing is confirmed yet
    worker.apply_deliveries(_deliveries(agreed + tail))
    assert projector.tracked(SHARD) == 0 and _balances(projector) == {}
    _confirm(projector, agreed[-1])
    worker.retry_pending()
    assert projector.tracked(SHARD) == CONFIRMED
    assert "acct-ghost" not in _balances(projector), "an unconfirmed record was projected"

    # the new leader's records, then the paused deposed leader's late copy of its tail: the
    # worker holds epoch 1's 104-105 again, both forks linking to record 103
    worker.apply_deliveries(_deliveries(fresh + tail))
    assert projector.tracked(SHARD) == CONFIRMED
    _confirm(projector, fresh[1])  # 105' is confirmed: the held 105 does not end there
    worker.retry_pending()
    assert projector.tracked_record(SHARD) == (105, 2, fresh[1].checksum)
    _confirm(projector, fresh[2])
    worker.retry_pending()
    balances = _balances(projector)
    assert "acct-ghost" not in balances
    assert balances["acct-new"] == Decimal(6)
    assert projector.tracked_record(SHARD) == (106, 2, fresh[2].checksum)
    assert projector.forks == 0  # never projected, so nothing to roll back


def test_views_ahead_of_a_rejoined_store_are_rolled_back_and_alerted(
    settings: Settings, dsn: str
) -> None:
    alerts: list[tuple[str, str]] = []
    projector = make_projector(settings, dsn=dsn)
    projector.on_fork = lambda shard, message: alerts.append((shard, message))
    deposed = make_shard_app(settings, SHARD, dsn=dsn, epoch=1)
    deposed.recover()
    _commit(deposed, "acct-real", CONFIRMED)
    _commit(deposed, "acct-ghost", 2)
    projector.apply(SHARD, (), through=105)  # a forced promotion's views: nothing confirmed it
    assert deposed.store.quarantine_from(SHARD, CONFIRMED + 1, "diverged at seq 104") == 2
    deposed.close()
    leader = make_shard_app(settings, SHARD, dsn=dsn)
    leader.recover()
    leader.epoch = 2
    _commit(leader, "acct-new", 1)
    leader.close()
    # nothing new to apply (the store ends at 104 < 105): the periodic check finds it
    rolled = projector.verify(SHARD, upto=104)
    assert rolled is not None and rolled.tracked == 104
    balances = _balances(projector)
    assert "acct-ghost" not in balances and balances["acct-new"] == Decimal(1)
    assert projector.tracked_record(SHARD)[:2] == (104, 2)
    assert projector.forks == 1
    assert alerts and alerts[0][0] == SHARD and "seq 105" in alerts[0][1]
    assert projector.verify(SHARD, upto=104) is None  # agrees now


class _Controller:
    """What the projection thread asks a shard's controller."""

    def __init__(self, app: ShardApp) -> None:
        self.app = app
        self.confirmed: int | None = None

    def confirmed_seq(self) -> int | None:
        return self.confirmed


def test_the_node_records_the_confirmed_point_and_projects_up_to_it(
    settings: Settings, dsn: str
) -> None:
    app = make_shard_app(settings, SHARD, dsn=dsn, epoch=1)
    app.recover()
    _commit(app, "acct-real", 20)
    projector = make_projector(settings, dsn=dsn)
    controller = _Controller(app)
    projection = NodeProjection({SHARD: cast(Any, controller)}, projector)
    state = ShardProjection()
    projection.run_shard(SHARD, cast(Any, controller), state)  # nothing confirmed: nothing
    assert projector.tracked(SHARD) == 0 and read_confirmed(projector.sessions, SHARD) is None
    controller.confirmed = 15
    projection.run_shard(SHARD, cast(Any, controller), state)
    record = app.store.read_records(SHARD, 14, 1)[0]
    assert read_confirmed(projector.sessions, SHARD) == ConfirmedPoint(
        SHARD, 15, 1, record.checksum
    )
    assert projector.tracked(SHARD) == 15 and state.lag == 5
    controller.confirmed = 12  # a new term's view may start lower: the recorded point stays
    projection.run_shard(SHARD, cast(Any, controller), state)
    assert read_confirmed(projector.sessions, SHARD).seq == 15  # type: ignore[union-attr]
    assert projector.tracked(SHARD) == 15
    # the thread: woken by a commit, it follows the confirmed point
    projection.start()
    try:
        controller.confirmed = 20
        projection.poke()
        deadline = time.monotonic() + 5
        while projector.tracked(SHARD) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        projection.stop()
        app.close()
    assert projector.tracked(SHARD) == 20
    assert projection.lag(SHARD) == 0
