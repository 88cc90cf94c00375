"""Order aggregate: the record of one client order from placement to its final status.

The engine decides every outcome (fills, fees, reservations) before any event is triggered;
events carry the computed values and their apply() only assigns them, so replay is exact.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import TZINFO, Aggregate
from eventsourcing.utils import get_topic

from domain.base import ExchangeAggregate, build_event, sha1_digest, uuid_of_digest
from domain.values import (
    CLOSED_STATUSES,
    Liquidity,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
)

_ORDER_NAMESPACE = uuid5(NAMESPACE_URL, "exchange-dr:order")
_ID_PREFIXES: dict[int, bytes] = {}
"""Hashed prefix of each account's order ids (namespace, account hex, "/"): one per account."""
_ID_PREFIXES_MAX = 100_000
_new_object = object.__new__
_now = datetime.now


class Order(ExchangeAggregate):
    """A client order; its id is derived from (account, client order id) so retries collide."""

    class Placed(Aggregate.Created):
        """Accepted by the engine with its time priority and margin reservation."""

        account_id: UUID
        owner: str
        client_order_id: str
        symbol: str
        side: Side
        order_type: OrderType
        price_ticks: int | None
        quantity_lots: int
        time_in_force: TimeInForce
        post_only: bool
        reduce_only: bool
        leverage: int
        priority: int
        reserve_per_lot: Decimal

        def mutate(self, aggregate: Any) -> Any:
            """The order Aggregate.Created.mutate() builds, attribute for attribute, without
            its signature filtering (replay creates one per placed order)."""
            state = self.__dict__
            if aggregate is not None or state.get("originator_topic") != _ORDER_TOPIC:
                return super().mutate(aggregate)
            fields = {name: state[name] for name in _PLACED_FIELDS}
            timestamp = state["timestamp"]
            order: Order = _new_object(Order)
            order.__dict__.update({
                "_id": state["originator_id"], "_version": state["originator_version"],
                "_created_on": timestamp, "_modified_on": timestamp, "_pending_events": [],
                **fields,
                "reserved_margin": fields["reserve_per_lot"] * fields["quantity_lots"],
                "filled_lots": 0, "status": OrderStatus.NEW, "reject_reason": None, "fills": [],
            })
            return order

    class Filled(Aggregate.Event):
        """One execution against a counterparty order."""

        trade_id: int
        price_ticks: int
        quantity_lots: int
        fee: Decimal
        liquidity: Liquidity
        counterparty_order_id: UUID
        reserved_margin: Decimal

        def apply(self, aggregate: Any) -> None:
            order: Order = aggregate
            order.filled_lots += self.quantity_lots
            order.reserved_margin = self.reserved_margin
            order.fills.append(
                (self.trade_id, self.price_ticks, self.quantity_lots, self.fee, self.liquidity)
            )
            order.status = (
                OrderStatus.FILLED
                if order.filled_lots == order.quantity_lots
                else OrderStatus.PARTIALLY_FILLED
            )

    class Cancelled(Aggregate.Event):
        """Remainder withdrawn by the account."""

        def apply(self, aggregate: Any) -> None:
            order: Order = aggregate
            order.status = OrderStatus.CANCELLED
            order.reserved_margin = Decimal(0)

    class Rejected(Aggregate.Event):
        """Refused by a matching rule before any execution."""

        reason: RejectReason

        def apply(self, aggregate: Any) -> None:
            order: Order = aggregate
            order.status = OrderStatus.REJECTED
            order.reject_reason = self.reason
            order.reserved_margin = Decimal(0)

    class Expired(Aggregate.Event):
        """Remainder ended by its time in force, the price band, self-trade prevention or (for a
        resting reduce-only order) a fill that would grow the position."""

        reason: RejectReason

        def apply(self, aggregate: Any) -> None:
            order: Order = aggregate
            order.status = OrderStatus.EXPIRED
            order.reject_reason = self.reason
            order.reserved_margin = Decimal(0)

    def __init__(
        self,
        account_id: UUID,
        owner: str,
        client_order_id: str,
        symbol: str,
        side: Side,
        order_type: OrderType,
        price_ticks: int | None,
        quantity_lots: int,
        time_in_force: TimeInForce,
        post_only: bool,
        reduce_only: bool,
        leverage: int,
        priority: int,
        reserve_per_lot: Decimal,
    ) -> None:
        self.account_id = account_id
        self.owner = owner
        self.client_order_id = client_order_id
        self.symbol = symbol
        self.side = side
        self.order_type = order_type
        self.price_ticks = price_ticks
        self.quantity_lots = quantity_lots
        self.time_in_force = time_in_force
        self.post_only = post_only
        self.reduce_only = reduce_only
        self.leverage = leverage
        self.priority = priority
        self.reserve_per_lot = reserve_per_lot
        self.reserved_margin = reserve_per_lot * quantity_lots
        self.filled_lots = 0
        self.status = OrderStatus.NEW
        self.reject_reason: RejectReason | None = None
        self.fills: list[tuple[int, int, int, Decimal, Liquidity]] = []

    @staticmethod
    def create_id(account_id: UUID, client_order_id: str) -> UUID:
        """Deterministic id: the same client order id of an account is the same order."""
        prefix = _ID_PREFIXES.get(account_id.int)
        if prefix is None:
            if len(_ID_PREFIXES) >= _ID_PREFIXES_MAX:
                _ID_PREFIXES.clear()
            prefix = _ID_PREFIXES[account_id.int] = (
                _ORDER_NAMESPACE.bytes + f"{account_id.hex}/".encode())
        return uuid_of_digest(sha1_digest(prefix + client_order_id.encode()))

    @classmethod
    def place(cls, order_id: UUID, fields: dict[str, Any]) -> Order:
        """Create the order from engine-computed Placed fields, as _create() would, minus
        its signature binding, topic lookups and keyword passing (once per command)."""
        timestamp = _now(TZINFO)
        event = build_event(cls.Placed, {
            "originator_topic": _ORDER_TOPIC, "originator_id": order_id,
            "originator_version": 1, "timestamp": timestamp, **fields,
        })
        order: Order = _new_object(cls)
        # the attributes __base_init__() and __init__() set, in their order
        order.__dict__.update({
            "_id": order_id, "_version": 1, "_created_on": timestamp,
            "_modified_on": timestamp, "_pending_events": [event], **fields,
            "reserved_margin": fields["reserve_per_lot"] * fields["quantity_lots"],
            "filled_lots": 0, "status": OrderStatus.NEW, "reject_reason": None, "fills": [],
        })
        return order

    @property
    def is_open(self) -> bool:
        """Still resting or about to rest: not filled, cancelled, rejected or expired."""
        return self.status not in CLOSED_STATUSES

    @property
    def remaining_lots(self) -> int:
        """Lots not yet executed."""
        return self.quantity_lots - self.filled_lots

    def fill(self, trade_id: int, price_ticks: int, quantity_lots: int, fee: Decimal,
             liquidity: Liquidity, counterparty_order_id: UUID,
             reserved_margin: Decimal) -> None:
        """Record an execution computed by the engine."""
        self._record(
            self.Filled, trade_id=trade_id, price_ticks=price_ticks,
            quantity_lots=quantity_lots, fee=fee, liquidity=liquidity,
            counterparty_order_id=counterparty_order_id, reserved_margin=reserved_margin,
        )

    def cancel(self) -> None:
        """Withdraw the open remainder."""
        self._record(self.Cancelled)

    def reject(self, reason: RejectReason) -> None:
        """End the order unexecuted."""
        self._record(self.Rejected, reason=reason)

    def expire(self, reason: RejectReason) -> None:
        """End the open remainder."""
        self._record(self.Expired, reason=reason)

    def canonical(self) -> str:
        """Stable text of the order for state hashes."""
        return (
            f"order {self._id} {self._version} {self.owner} {self.client_order_id} {self.symbol}"
            f" {self.side} {self.order_type} {self.price_ticks} {self.quantity_lots}"
            f" {self.filled_lots} {self.time_in_force} {self.post_only:d} {self.reduce_only:d}"
            f" {self.leverage} {self.priority} {self.reserved_margin.normalize()} {self.status}"
            f" {self.reject_reason}"
        )


_ORDER_TOPIC = get_topic(Order)
_PLACED_FIELDS = (
    "account_id", "owner", "client_order_id", "symbol", "side", "order_type", "price_ticks",
    "quantity_lots", "time_in_force", "post_only", "reduce_only", "leverage", "priority",
    "reserve_per_lot",
)
"""Order.__init__'s parameters, in the order it assigns them."""
