"""The controller glue of quorum promotion (infra/failover/quorum_promotion.py): the priorities
every node agrees on, the position a replica publishes, the hook that decides and fetches before
a promotion, and the fetch from one survivor's store. No servers: the rig of
tests/unit/controller_harness.py, with each survivor's store answering up to a head of its own."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from application.replication.quorum import Position, ReplicaKind, ReplicaPosition
from infra.failover import quorum_promotion
from infra.failover.quorum_promotion import (
    fetch_from,
    own_position,
    priorities_of,
    publish_position,
    ready_to_promote,
)
from tests.unit.controller_harness import SHARD, FakeStore, Rig, make_rig

FULL, WITNESS = ReplicaKind.FULL, ReplicaKind.WITNESS
REPLICAS = (("primary", FULL), ("standby", FULL), ("witness", WITNESS))
GONE = None  # a survivor whose store does not answer


def _rig(
    region: str = "standby",
    *,
    replicas: tuple[tuple[str, ReplicaKind], ...] = REPLICAS,
    seq: int = 90,
    epoch: int = 1,
) -> Rig:
    """Three replicas: this one, the old leader `primary` and a witness (or the others of
    `replicas`); no leader store opened yet."""
    others = tuple(name for name, _ in REPLICAS if name != region)
    rig = make_rig(region, peers=others, seq=seq, epoch=epoch)
    object.__setattr__(rig.controller.ctx, "replicas", replicas)
    rig.controller.leader_views.clear()
    return rig


class _Sources:
    """Each survivor's store, opened through ctx.open_store; catch_up reads the store the
    replicator points at, up to that survivor's head (or raises: GONE, or no source's store)."""

    def __init__(self, rig: Rig, heads: dict[str, int | None]) -> None:
        self.rig, self.heads = rig, heads
        self.stores = {name: FakeStore() for name in heads}
        self.opened: list[str] = []
        self.fetched: list[str] = []  # the source each catch_up read
        self.threads: list[threading.Thread] = []
        self.histories: list[list[tuple[int, int]]] = []  # controller.history during catch_up
        object.__setattr__(rig.controller.ctx, "open_store", self.open_store)
        rig.replicator.catch_up = self.catch_up  # type: ignore[method-assign]

    def open_store(self, region: str) -> Any:
        self.opened.append(region)
        return SimpleNamespace(store=self.stores[region])

    def catch_up(self, *, everything: bool = True) -> int:
        primary = self.rig.replicator.primary
        name = next((n for n, store in self.stores.items() if store is primary), "no source")
        self.fetched.append(name)
        self.threads.append(threading.current_thread())
        self.histories.append(list(self.rig.controller.history))
        head = self.heads.get(name)
        if head is None:
            raise ConnectionError(f"{name}'s store did not answer")
        self.rig.app.write(max(0, head - self.rig.app.seq))
        return self.rig.app.seq


def _members(rig: Rig, **seqs: int) -> None:
    """What the other replicas published (epoch 1, kind as configured)."""
    kinds = dict(REPLICAS)
    for region, seq in seqs.items():
        rig.ensemble.positions.setdefault(SHARD, {})[region] = {
            "region": region,
            "kind": kinds[region].value,
            "epoch": 1,
            "seq": seq,
        }


def _ready(rig: Rig, unhealthy_for_s: float = 1.0) -> bool:
    # FAST failover_after is 0.1 s: 1 s unhealthy lets a standby behind the best one go
    return asyncio.run(
        ready_to_promote(rig.controller, unhealthy_for_s=unhealthy_for_s, planned=False)
    )


# -- priorities_of, own_position, publish_position ----------------------------------------------


def test_priorities_follow_the_configured_replica_order_first_listed_highest() -> None:
    rig = _rig(replicas=REPLICAS)
    assert priorities_of(rig.controller) == {"primary": 3, "standby": 2, "witness": 1}


def test_without_configured_replicas_priorities_are_own_region_then_peers_in_order() -> None:
    rig = _rig(replicas=())
    assert priorities_of(rig.controller) == {"standby": 3, "primary": 2, "witness": 1}


def test_between_equal_positions_the_replica_listed_first_goes_and_the_other_waits() -> None:
    """The priority order decides a tie in ready_to_promote: standby and primary both at 1/100."""
    first = _rig(replicas=(("standby", FULL), ("primary", FULL), ("witness", WITNESS)), seq=100)
    _members(first, primary=100)
    assert _ready(first, unhealthy_for_s=0.0)
    second = _rig(replicas=REPLICAS, seq=100)
    _members(second, primary=100)
    assert not _ready(second, unhealthy_for_s=0.0)


def test_own_position_is_this_regions_kind_epoch_seq_and_priority() -> None:
    rig = _rig("witness", seq=7, epoch=3)
    assert own_position(rig.controller) == ReplicaPosition("witness", WITNESS, Position(3, 7), 1)


def test_a_region_missing_from_the_configured_replicas_ranks_below_every_listed_one() -> None:
    rig = _rig(replicas=(("primary", FULL), ("witness", WITNESS)), seq=7)
    assert own_position(rig.controller).priority == 0


def test_publishing_puts_this_replicas_kind_epoch_and_seq_in_the_coordination() -> None:
    rig = _rig("witness", seq=7, epoch=3)
    asyncio.run(publish_position(rig.controller))
    assert rig.coord.members(SHARD) == [
        {"region": "witness", "kind": "witness", "epoch": 3, "seq": 7}
    ]


def test_a_publish_the_coordination_refuses_is_swallowed() -> None:
    """ZooKeeper away: the health round goes on (the ephemeral node is gone anyway)."""
    rig = _rig()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("zookeeper away")

    rig.coord.publish_position = refuse  # type: ignore[method-assign]
    asyncio.run(publish_position(rig.controller))


# -- ready_to_promote -----------------------------------------------------------------------


def test_a_standby_behind_the_best_candidate_waits_and_fetches_nothing() -> None:
    """decide says wait (primary ahead, not yet one more period): False, no store opened."""
    rig = _rig()
    sources = _Sources(rig, {"primary": 100, "witness": 95})
    _members(rig, primary=100, witness=95)
    assert _ready(rig, unhealthy_for_s=0.0) is False
    assert sources.opened == [] and sources.fetched == [] and rig.alerts.sent == []
    # it published its own position on the way
    assert rig.ensemble.positions[SHARD]["standby"]["seq"] == 90


def test_going_it_fetches_from_each_source_ahead_furthest_first() -> None:
    rig = _rig()
    sources = _Sources(rig, {"primary": 100, "witness": 95})
    _members(rig, primary=100, witness=95)
    assert _ready(rig) is True
    assert sources.fetched == ["primary", "witness"] and rig.app.seq == 100
    assert rig.alerts.sent == []


def test_an_old_leader_whose_store_is_gone_is_skipped_and_the_next_source_still_fetched(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What only the deposed leader holds was never acknowledged: promotion goes on, and the
    witness after it is still read."""
    rig = _rig()
    rig.controller.leader_region = "primary"
    sources = _Sources(rig, {"primary": GONE, "witness": 95})
    _members(rig, primary=100, witness=95)
    with caplog.at_level(logging.WARNING, logger="exchange_dr.failover"):
        assert _ready(rig) is True
    assert sources.fetched == ["primary", "witness"] and rig.app.seq == 95
    assert rig.alerts.sent == []
    assert (
        f"promotion shard={SHARD} region=standby: the old leader primary's store did not "
        "answer; what only it holds was never acknowledged, promoting without it"
    ) in caplog.messages


def test_another_source_whose_store_is_gone_refuses_with_one_critical_alert() -> None:
    """The witness may hold acknowledged records nobody else has: no promotion without them."""
    rig = _rig()
    rig.controller.leader_region = "primary"
    _Sources(rig, {"primary": 100, "witness": GONE})
    _members(rig, primary=100, witness=95)
    assert _ready(rig) is False
    assert rig.alerts.sent == [
        (
            "critical",
            "FailoverRefused",
            f"cannot fail over shard {SHARD}: witness holds records standby lacks and its "
            "store did not answer; the shard stays down rather than lose acknowledged records",
        )
    ]
    assert rig.alerts.labels["FailoverRefused"] == {
        "shard": SHARD,
        "region": "standby",
        "source": "witness",
    }


def test_a_witness_publishing_itself_as_full_is_judged_by_its_configured_kind() -> None:
    """Ahead of the standby but a witness by configuration: the standby is the best candidate
    at once and fetches from it."""
    rig = _rig()
    sources = _Sources(rig, {"witness": 100})
    rig.ensemble.positions[SHARD] = {
        "witness": {"region": "witness", "kind": "full", "epoch": 1, "seq": 100}
    }
    assert _ready(rig, unhealthy_for_s=0.0) is True
    assert sources.fetched == ["witness"] and rig.app.seq == 100


# -- fetch_from -----------------------------------------------------------------------------


def test_a_fetch_reads_the_sources_store_on_the_writer_thread_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The replicator points at the source's store during catch_up (run by the writer), with
    the epoch history re-read first; its own primary comes back after."""
    rig = _rig()
    rig.ensemble.epochs[SHARD] = [(1, 1)]
    rig.controller.history = []
    own = FakeStore()
    rig.replicator.primary = own
    sources = _Sources(rig, {"witness": 95})
    with caplog.at_level(logging.WARNING, logger="exchange_dr.failover"):
        assert asyncio.run(fetch_from(rig.controller, "witness")) is True
    assert sources.fetched == ["witness"] and rig.app.seq == 95
    assert sources.threads == [rig.writer.thread]
    assert sources.histories == [[(1, 1)]] and rig.controller.history == [(1, 1)]
    assert rig.replicator.primary is own
    assert f"fetched shard={SHARD} from=witness seq 90 -> 95 before promotion" in caplog.messages


def test_a_sources_store_is_opened_once_and_kept_in_leader_views() -> None:
    rig = _rig()
    sources = _Sources(rig, {"witness": 95})

    async def twice() -> None:
        assert await fetch_from(rig.controller, "witness")
        assert await fetch_from(rig.controller, "witness")

    asyncio.run(twice())
    assert sources.opened == ["witness"] and sources.fetched == ["witness", "witness"]
    view: Any = rig.controller.leader_views["witness"]
    assert view.store is sources.stores["witness"]


def test_a_store_already_open_for_the_source_is_used_without_opening_another() -> None:
    rig = _rig()
    sources = _Sources(rig, {"witness": 95})
    view: Any = SimpleNamespace(store=sources.stores["witness"])
    rig.controller.leader_views["witness"] = view
    assert asyncio.run(fetch_from(rig.controller, "witness")) is True
    assert sources.opened == [] and sources.fetched == ["witness"]


def test_a_fetch_whose_catch_up_fails_is_false_and_restores_the_primary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = _rig()
    own = FakeStore()
    rig.replicator.primary = own
    _Sources(rig, {"witness": GONE})
    with caplog.at_level(logging.ERROR, logger="exchange_dr.failover"):
        assert asyncio.run(fetch_from(rig.controller, "witness")) is False
    assert rig.replicator.primary is own and rig.app.seq == 90
    assert (
        f"fetch from witness failed shard={SHARD}: witness's store did not answer"
        in caplog.messages
    )


def test_a_catch_up_slower_than_the_timeout_counts_as_a_failed_fetch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CATCH_UP_TIMEOUT_S bounds the wait for one survivor's store."""
    monkeypatch.setattr(quorum_promotion, "CATCH_UP_TIMEOUT_S", 0.05)
    rig = _rig()
    own = FakeStore()
    rig.replicator.primary = own

    def hang(*, everything: bool = True) -> int:
        time.sleep(0.5)
        return rig.app.seq

    rig.replicator.catch_up = hang  # type: ignore[method-assign]
    assert asyncio.run(fetch_from(rig.controller, "witness")) is False
    assert rig.replicator.primary is own


def test_a_fetch_before_promotion_is_always_bounded() -> None:
    """A survivor's store that stops answering must not hold the promotion forever: the bound
    is a finite number of seconds, shorter than an operator's patience (the tests above lower
    it to run fast)."""
    assert isinstance(quorum_promotion.CATCH_UP_TIMEOUT_S, float)
    assert 0 < quorum_promotion.CATCH_UP_TIMEOUT_S <= 30
