"""The eventsourcing internals domain/base.py uses, checked against the installed library.

`ExchangeAggregate` records and replays events without the library's property calls and
keyword checks: it reads and writes BaseAggregate's private attributes and builds events
straight into their __dict__ (so do `Order.place` and `Order.Placed.mutate`, which build an
order as the library's creation path would). pyproject.toml pins eventsourcing to the series
these were written against; each test here names what changed if a release moves them.
"""

from __future__ import annotations

import inspect
from datetime import datetime
from decimal import Decimal
from importlib.metadata import version
from typing import Any

import pytest
from eventsourcing.domain import (
    TZINFO,
    Aggregate,
    BaseAggregate,
    CanCreateTimestamp,
    OriginatorIDError,
    OriginatorVersionError,
)

from application.wal.transcoding import make_mapper
from domain.account import Account
from domain.base import build_event
from domain.order import Order
from domain.values import OrderType, Side, TimeInForce

PINNED_SERIES = (9, 5)
INSTALLED = version("eventsourcing")
BOOKKEEPING = ["_id", "_version", "_created_on", "_modified_on", "_pending_events"]


def changed(what: str) -> str:
    return (
        f"eventsourcing {INSTALLED} changed {what}, which domain/base.py relies on (written "
        f"against {PINNED_SERIES[0]}.{PINNED_SERIES[1]}): adapt ExchangeAggregate._record/"
        "replay/collect_events, build_event, Order.place and Order.Placed.mutate before "
        "moving the pin in pyproject.toml"
    )


def opened(owner: str = "alice") -> Account:
    account = Account.open("shard-x", owner)
    account.collect_events()
    return account


def without_times(state: dict[str, Any]) -> dict[str, Any]:
    skip = {"timestamp", "_created_on", "_modified_on", "_pending_events"}
    return {k: v for k, v in state.items() if k not in skip}


def test_installed_version_is_the_pinned_series() -> None:
    major, minor = (int(part) for part in INSTALLED.split(".")[:2])
    assert (major, minor) == PINNED_SERIES, (
        f"eventsourcing {INSTALLED} is installed, but the internals domain/base.py uses were "
        f"checked against {PINNED_SERIES[0]}.{PINNED_SERIES[1]}: run this module's other tests, "
        "adapt domain/base.py if they fail, then move PINNED_SERIES and the pin in pyproject.toml"
    )


def test_aggregate_bookkeeping_attributes() -> None:
    account = opened()
    assert list(vars(account))[: len(BOOKKEEPING)] == BOOKKEEPING, changed(
        "the attributes BaseAggregate.__base_init__ sets (names or order)"
    )
    account._version = 41
    account._modified_on = stamp = datetime.now(TZINFO)
    assert (account.id, account.version, account.modified_on, account.pending_events) == (
        account._id,
        41,
        stamp,
        account._pending_events,
    ), changed("the attributes behind id, version, modified_on and pending_events")


def test_timestamps_are_now_in_tzinfo() -> None:
    stamp = CanCreateTimestamp.create_timestamp()
    assert isinstance(stamp, datetime) and stamp.tzinfo is TZINFO, changed(
        "create_timestamp(), which _record replaces by datetime.now(TZINFO)"
    )


def test_recorded_event_is_the_triggered_event() -> None:
    recorded, triggered = opened(), opened()
    recorded.deposit(Decimal("5"))
    triggered.trigger_event(Account.Deposited, amount=Decimal("5"))
    [ours], [theirs] = recorded.collect_events(), triggered.collect_events()
    assert type(ours) is type(theirs), changed("the event trigger_event builds")
    assert sorted(vars(ours)) == sorted(vars(theirs)), changed(
        "the fields trigger_event sets on an event"
    )
    assert without_times(vars(ours)) == without_times(vars(theirs)), changed(
        "the values trigger_event sets on an event"
    )
    assert without_times(vars(recorded)) == without_times(vars(triggered)), changed(
        "what trigger_event/mutate change on the aggregate"
    )
    assert recorded.modified_on == ours.timestamp, changed("what mutate sets as modified_on")


def test_built_event_is_the_constructed_event() -> None:
    account = opened()
    fields = {
        "originator_id": account.id,
        "originator_version": 2,
        "timestamp": datetime.now(TZINFO),
        "amount": Decimal("7"),
    }
    built = build_event(Account.Deposited, dict(fields))
    constructed = Account.Deposited(**fields)
    assert built == constructed and vars(built) == vars(constructed), changed(
        "how an event's dataclass __init__ fills its __dict__"
    )
    mapper = make_mapper()
    assert mapper.to_stored_event(built) == mapper.to_stored_event(constructed), changed(
        "how the mapper serialises an event (no longer vars(event))"
    )


def _next_event(account: Account, **overrides: Any) -> Account.Deposited:
    fields = {
        "originator_id": account.id,
        "originator_version": account.version + 1,
        "timestamp": datetime.now(TZINFO),
        "amount": Decimal("3"),
    }
    fields.update(overrides)
    return build_event(Account.Deposited, fields)


def test_replay_is_mutate() -> None:
    ours, theirs = opened(), opened()
    event = _next_event(ours)
    ours.replay(event)
    event.mutate(theirs)
    assert without_times(vars(ours)) == without_times(vars(theirs)), changed(
        "what Event.mutate does to an aggregate"
    )
    assert ours.modified_on == theirs.modified_on == event.timestamp, changed(
        "what Event.mutate sets as modified_on"
    )


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"originator_id": Account.create_id("shard-x", "bob")}, OriginatorIDError),
        ({"originator_version": 9}, OriginatorVersionError),
    ],
)
def test_replay_refuses_what_mutate_refuses(
    override: dict[str, Any], error: type[Exception]
) -> None:
    ours, theirs = opened(), opened()
    event = _next_event(ours, **override)
    with pytest.raises(error) as mutate_raised:
        event.mutate(theirs)
    with pytest.raises(error) as replay_raised:
        ours.replay(event)
    assert replay_raised.value.args == mutate_raised.value.args, changed(
        f"the arguments Event.mutate gives {error.__name__}"
    )


def test_placed_order_is_the_one_the_library_creates() -> None:
    account = opened()
    order_id = Order.create_id(account.id, "c1")
    placed = Order.place(
        order_id,
        {
            "account_id": account.id,
            "owner": account.owner,
            "client_order_id": "c1",
            "symbol": "BTCUSDT",
            "side": Side.BUY,
            "order_type": OrderType.LIMIT,
            "price_ticks": 500_000,
            "quantity_lots": 3,
            "time_in_force": TimeInForce.GTC,
            "post_only": False,
            "reduce_only": False,
            "leverage": 10,
            "priority": 1,
            "reserve_per_lot": Decimal("1.5"),
        },
    )
    [event] = placed.pending_events
    library = super(Order.Placed, event).mutate(None)  # Aggregate.Created.mutate
    library.collect_events()
    assert library is not None
    for ours in (placed, event.mutate(None)):
        assert list(vars(ours)) == list(vars(library)), changed(
            "the attributes an aggregate's creation sets (names or order)"
        )
        assert without_times(vars(ours)) == without_times(vars(library)), changed(
            "the values an aggregate's creation sets"
        )


def test_signatures_base_py_calls_or_overrides() -> None:
    apply = list(inspect.signature(Aggregate.Event.apply).parameters)
    assert apply == ["self", "aggregate"], changed("Event.apply(aggregate)")
    collect = list(inspect.signature(BaseAggregate.collect_events).parameters)
    assert collect == ["self"], changed("BaseAggregate.collect_events()")
