"""Projection of WAL records onto read-model rows: plain functions, no Kafka, no database.

`ViewRows` is the working set of one transaction: rows already loaded (`needed_ids` says which
to load for a batch of records) and rows created by it. `project_record` turns one record's
domain events into changes of those rows; the caller persists them with the tracking row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Mapper, StoredEvent

from application.wal.records import WalRecord
from application.wal.transcoding import make_mapper
from domain.account import Account
from domain.order import Order
from domain.position import Position
from domain.values import Instrument, Liquidity, OrderStatus
from projections.read_models.models import BalanceRow, OrderRow, PositionRow, TradeRow

_ZERO = Decimal(0)


class ProjectionError(Exception):
    """A record that does not fit the views (an event for a row never created)."""


@dataclass
class ViewRows:
    """Rows one transaction reads and writes, by aggregate id; `added` are the new ones."""

    instruments: Mapping[str, Instrument]
    orders: dict[UUID, OrderRow] = field(default_factory=dict)
    positions: dict[UUID, PositionRow] = field(default_factory=dict)
    balances: dict[UUID, BalanceRow] = field(default_factory=dict)
    added: list[Any] = field(default_factory=list)
    records: int = 0
    trades: int = 0
    placed: int = 0

    def add(self, row: Any) -> None:
        self.added.append(row)


def needed_ids(records: Iterable[WalRecord]) -> set[UUID]:
    """Aggregates a batch changes without creating them: their rows must be loaded first."""
    wanted: set[UUID] = set()
    for record in records:
        for event in record.events:
            if event.originator_version > 1:
                wanted.add(event.originator_id)
    return wanted


_MAPPER: Mapper[UUID] | None = None


def decode_events(record: WalRecord) -> list[Aggregate.Event]:
    """The record's domain events, decoded exactly as the shard encoded them."""
    global _MAPPER
    if _MAPPER is None:
        _MAPPER = make_mapper()
    mapper = _MAPPER
    return [
        cast(
            Aggregate.Event,
            mapper.to_domain_event(
                StoredEvent(e.originator_id, e.originator_version, e.topic, e.state)
            ),
        )
        for e in record.events
    ]


def project_record(rows: ViewRows, record: WalRecord) -> None:
    """Apply one verified record to the rows (the record's events in their stored order)."""
    shard, seq = record.shard_id, record.seq
    fills: dict[int, list[tuple[OrderRow, Order.Filled]]] = {}
    for event in decode_events(record):
        if isinstance(event, Order.Event):
            _project_order(rows, event, shard, seq, fills)
        elif isinstance(event, Account.Event):
            _project_account(rows, event, shard, seq)
        elif isinstance(event, Position.Event):
            _project_position(rows, event, shard, seq)
        else:
            raise ProjectionError(f"shard {shard} seq {seq}: unexpected event {event!r}")
    for trade_id, legs in fills.items():
        rows.add(_trade(rows, shard, seq, trade_id, legs))
        rows.trades += 1
    rows.records += 1


def _instrument(rows: ViewRows, symbol: str) -> Instrument:
    instrument = rows.instruments.get(symbol)
    if instrument is None:
        raise ProjectionError(f"no instrument {symbol} configured for the read models")
    return instrument


def _existing(table: Mapping[UUID, Any], event: Aggregate.Event, kind: str) -> Any:
    row = table.get(event.originator_id)
    if row is None:
        raise ProjectionError(
            f"{kind} {event.originator_id} changed (version {event.originator_version}) "
            "but never created in the read models"
        )
    return row


def _project_order(
    rows: ViewRows,
    event: Order.Event,
    shard: str,
    seq: int,
    fills: dict[int, list[tuple[OrderRow, Order.Filled]]],
) -> None:
    if isinstance(event, Order.Placed):
        instrument = _instrument(rows, event.symbol)
        row = OrderRow(
            order_id=event.originator_id,
            shard=shard,
            account=event.owner,
            client_order_id=event.client_order_id,
            symbol=event.symbol,
            side=str(event.side),
            order_type=str(event.order_type),
            time_in_force=str(event.time_in_force),
            post_only=event.post_only,
            reduce_only=event.reduce_only,
            leverage=event.leverage,
            price_ticks=event.price_ticks,
            quantity_lots=event.quantity_lots,
            filled_lots=0,
            price=None
            if event.price_ticks is None
            else instrument.ticks_to_price(event.price_ticks),
            quantity=instrument.lots_to_quantity(event.quantity_lots),
            filled_quantity=_ZERO,
            reserved_margin=event.reserve_per_lot * event.quantity_lots,
            fees=_ZERO,
            status=str(OrderStatus.NEW),
            reject_reason=None,
            placed_seq=seq,
            seq=seq,
        )
        rows.orders[row.order_id] = row
        rows.add(row)
        rows.placed += 1
        return
    row = _existing(rows.orders, event, "order")
    row.seq = seq
    if isinstance(event, Order.Filled):
        instrument = _instrument(rows, row.symbol)
        row.filled_lots += event.quantity_lots
        row.filled_quantity = instrument.lots_to_quantity(row.filled_lots)
        row.reserved_margin = event.reserved_margin
        row.fees += event.fee
        row.status = str(
            OrderStatus.FILLED
            if row.filled_lots == row.quantity_lots
            else OrderStatus.PARTIALLY_FILLED
        )
        fills.setdefault(event.trade_id, []).append((row, event))
    elif isinstance(event, Order.Cancelled):
        row.status = str(OrderStatus.CANCELLED)
        row.reserved_margin = _ZERO
    elif isinstance(event, Order.Rejected | Order.Expired):
        row.status = str(
            OrderStatus.REJECTED if isinstance(event, Order.Rejected) else OrderStatus.EXPIRED
        )
        row.reject_reason = str(event.reason)
        row.reserved_margin = _ZERO
    else:
        raise ProjectionError(f"shard {shard} seq {seq}: unknown order event {event!r}")


def _trade(
    rows: ViewRows,
    shard: str,
    seq: int,
    trade_id: int,
    legs: list[tuple[OrderRow, Order.Filled]],
) -> TradeRow:
    by_liquidity = {fill.liquidity: (row, fill) for row, fill in legs}
    if len(legs) != 2 or len(by_liquidity) != 2:
        raise ProjectionError(
            f"shard {shard} seq {seq}: trade {trade_id} needs a maker and "
            f"a taker fill, got {len(legs)}"
        )
    maker, maker_fill = by_liquidity[Liquidity.MAKER]
    taker, taker_fill = by_liquidity[Liquidity.TAKER]
    instrument = _instrument(rows, taker.symbol)
    return TradeRow(
        shard=shard,
        trade_id=trade_id,
        symbol=taker.symbol,
        price_ticks=taker_fill.price_ticks,
        quantity_lots=taker_fill.quantity_lots,
        price=instrument.ticks_to_price(taker_fill.price_ticks),
        quantity=instrument.lots_to_quantity(taker_fill.quantity_lots),
        taker_side=taker.side,
        maker_order_id=maker.order_id,
        taker_order_id=taker.order_id,
        maker_account=maker.account,
        taker_account=taker.account,
        maker_fee=maker_fill.fee,
        taker_fee=taker_fill.fee,
        seq=seq,
    )


def _project_account(rows: ViewRows, event: Account.Event, shard: str, seq: int) -> None:
    if isinstance(event, Account.Opened):
        row = BalanceRow(
            account_id=event.originator_id,
            shard=event.shard_id,
            account=event.owner,
            balance=_ZERO,
            order_margin=_ZERO,
            position_margin=_ZERO,
            available=_ZERO,
            seq=seq,
        )
        rows.balances[row.account_id] = row
        rows.add(row)
        return
    row = _existing(rows.balances, event, "account")
    if isinstance(event, Account.Deposited | Account.FeeCollected | Account.PnlRealized):
        row.balance += event.amount
    elif isinstance(event, Account.Withdrawn | Account.FeeCharged):
        row.balance -= event.amount
    elif isinstance(event, Account.MarginChanged):
        row.order_margin = event.order_margin
        row.position_margin = event.position_margin
    elif isinstance(event, Account.Settled):
        row.balance = event.balance
        row.order_margin = event.order_margin
        row.position_margin = event.position_margin
    else:
        raise ProjectionError(f"shard {shard} seq {seq}: unknown account event {event!r}")
    row.available = row.balance - row.order_margin - row.position_margin
    row.seq = seq


def _project_position(rows: ViewRows, event: Position.Event, shard: str, seq: int) -> None:
    if isinstance(event, Position.Opened):
        row = PositionRow(
            position_id=event.originator_id,
            shard=shard,
            account=event.owner,
            symbol=event.symbol,
            leverage=event.leverage,
            size_lots=0,
            cost_ticklots=0,
            size=_ZERO,
            entry_cost=_ZERO,
            margin=_ZERO,
            realized_pnl=_ZERO,
            seq=seq,
        )
        rows.positions[row.position_id] = row
        rows.add(row)
        return
    row = _existing(rows.positions, event, "position")
    if not isinstance(event, Position.Traded):
        raise ProjectionError(f"shard {shard} seq {seq}: unknown position event {event!r}")
    instrument = _instrument(rows, row.symbol)
    row.size_lots = event.size_lots
    row.cost_ticklots = event.cost_ticklots
    row.size = instrument.lots_to_quantity(event.size_lots)
    row.entry_cost = instrument.notional(event.cost_ticklots, 1)
    row.leverage = event.leverage
    row.margin = event.margin
    row.realized_pnl += event.realized_pnl
    row.seq = seq
