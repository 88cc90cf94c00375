"""Read models after a fork: a deposed leader's unconfirmed tail never stays in the views.

The scenario of every failover with a lost tail: the leader (epoch 1) commits 104-105 and its
relay publishes them at once, no follower stores them, the leader dies; the new leader (epoch 2)
writes its own records at 104 and on. Both forks link to record 103, so the hash chain alone
cannot tell them apart: the views must follow the store of their region, keyed on
(epoch, seq, checksum), never on seq alone.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from application.shard.app import ShardApp
from domain.commands import Deposit
from infra.bootstrap import make_projector, make_shard_app
from infra.settings import Settings
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
