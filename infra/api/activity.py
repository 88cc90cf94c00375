"""The unprojected tail of a shard's order history, in memory: what the SQL read models do not
hold yet.

History is served from the read models (infra/api/history.py); they trail the WAL by the
projection's lag. So that a client reads its own writes at once, this overlay keeps the views
of orders and the fills of every command after the projection's tracking row (`floor`): kept
current on the writer thread from each outcome as its batch is prepared, or, on a standby and
at start, from stored records. `trim` drops what the tracking row has passed. Its size depends
on the projection's lag, never on the length of history.

Entries from outcomes come before their batch is durable, so the overlay keeps an undo journal
of its last UNDO_SEQS seqs: when the shard recovers after a batch failed to land, it takes back
what came from beyond the recovered seq instead of reading the store again.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import cast
from uuid import UUID

from eventsourcing.domain import Aggregate

from application.shard.app import Outcome, ShardApp
from application.views import FillView, OrderView
from application.wal.records import WalRecord
from domain.commands import PlaceOrder
from domain.order import Order
from domain.values import Instrument, Liquidity

log = logging.getLogger("exchange_dr.api.activity")

_ORDER_TOPIC = "domain.order:"

UNDO_SEQS = 10_000
"""How many of the newest seqs the undo journal covers: far more than the batches that can be
prepared beyond the durable seq (the one committing and the one built on it)."""

# (seq, order id, the order's overlay entry before) for an order; (seq, None, account) for a fill
_Undo = tuple[int, UUID | None, "tuple[OrderView, int | None] | str | None"]


def fill_position(fill: FillView) -> int:
    """A fill's place in an account's trade order: by trade id, the maker side before the taker
    side (a self-trade has both); 0 is before every fill."""
    return 2 * fill.trade_id + (1 if fill.liquidity == Liquidity.MAKER else 2)


class ShardActivity:
    """Order views and fills of one shard after `floor`, by account. Mutated only on the
    shard's writer thread."""

    def __init__(self, shard_id: str, instruments: Iterable[Instrument], *, seq: int = 0) -> None:
        """An empty overlay of the commands after `seq` (what came before is in the read
        models, or is indexed from the store by whoever made this one)."""
        self.shard_id = shard_id
        self.instruments = {i.symbol: i for i in instruments}
        self.orders: dict[UUID, OrderView] = {}
        self._placed: dict[UUID, int | None] = {}  # placement seq, None: before the floor
        self._order_ids: dict[str, set[UUID]] = {}
        self._fills: dict[str, list[FillView]] = {}
        self._fill_count = 0  # kept apart: other threads read `size` (metrics, tests)
        # open orders as stored records left them (index_records), each read once: bounded by
        # what is open now
        self._live: dict[UUID, Order] = {}
        self.seq = seq
        self.floor = seq  # everything after it is here; up to it, in the read models
        self._undo: deque[_Undo] = deque()
        self._undo_floor = seq  # the journal holds every entry after this seq

    @property
    def size(self) -> int:
        """Order views and fills held: bounded by the projection's lag."""
        return len(self.orders) + self._fill_count

    # -- writes (writer thread) -------------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        """Take the orders and executions of a committed command into the overlay."""
        result = outcome.result
        if result is None or outcome.duplicate:
            return
        seq = outcome.seq
        undo = self._undo
        placed = outcome.order if isinstance(outcome.command, PlaceOrder) else None
        for aggregate in result.touched:
            if isinstance(aggregate, Order):
                view = OrderView.of(
                    aggregate, self.instruments[aggregate.symbol], self.shard_id, seq
                )
                undo.append((seq, view.order_id, self._entry(view.order_id)))
                self._put(view, seq if aggregate is placed else None)
                self._live.pop(view.order_id, None)  # the engine's own is the one that moves
        for trade in result.trades:
            undo.append((seq, None, trade.maker_account))
            undo.append((seq, None, trade.taker_account))
            instrument = self.instruments[trade.symbol]
            price = instrument.ticks_to_price(trade.price_ticks)
            quantity = instrument.lots_to_quantity(trade.quantity_lots)
            self._add_fill(
                FillView(
                    trade.trade_id,
                    self.shard_id,
                    trade.maker_account,
                    trade.symbol,
                    trade.maker_order_id,
                    trade.taker_side.opposite,
                    price,
                    quantity,
                    trade.maker_fee,
                    Liquidity.MAKER,
                    seq,
                )
            )
            self._add_fill(
                FillView(
                    trade.trade_id,
                    self.shard_id,
                    trade.taker_account,
                    trade.symbol,
                    trade.taker_order_id,
                    trade.taker_side,
                    price,
                    quantity,
                    trade.taker_fee,
                    Liquidity.TAKER,
                    seq,
                )
            )
        self.seq = max(self.seq, seq)
        while undo and undo[0][0] <= seq - UNDO_SEQS:
            self._undo_floor = undo.popleft()[0]

    def rollback(self, seq: int) -> bool:
        """Take back what commands beyond `seq` put in the overlay (their batch did not land),
        newest first. False if the journal does not reach back to `seq`: fill it again."""
        if self._undo_floor > seq:
            return False
        undo = self._undo
        while undo and undo[-1][0] > seq:
            _, order_id, before = undo.pop()
            if order_id is None:
                assert isinstance(before, str)
                _pop_newest(self._fills, before)
                self._fill_count -= 1
            elif isinstance(before, tuple):
                self.orders[order_id], self._placed[order_id] = before
            else:  # not in the overlay before that command: placed by it, or in the read models
                self._drop(order_id)
        self.seq = min(self.seq, seq)
        return True

    def trim(self, tracked: int) -> int:
        """Drop what the read models hold now that their tracking row is at `tracked`: order
        views of a seq at or below it, fills of such seqs. Returns how many entries went."""
        if tracked <= self.floor:
            return 0
        self.floor = min(tracked, self.seq)
        floor = self.floor
        gone = [order_id for order_id, view in self.orders.items() if view.seq <= floor]
        for order_id in gone:
            self._drop(order_id)
        dropped = len(gone)
        for account in list(self._fills):
            fills = self._fills[account]
            keep = [fill for fill in fills if fill.seq > floor]
            dropped += len(fills) - len(keep)
            self._fill_count -= len(fills) - len(keep)
            if keep:
                self._fills[account] = keep
            else:
                del self._fills[account]
        return dropped

    def index_records(
        self,
        app: ShardApp,
        records: Iterable[WalRecord],
        decoded: Mapping[int, Sequence[Aggregate.Event]] | None = None,
    ) -> int:
        """Index stored records that follow what is held (at start from the tracking row, and
        as a standby replicates). `decoded`: the records' events already decoded, by seq (what
        the standby applied). An order placed before the overlay's records and changed by
        them is taken from the engine, which holds every open order. Returns the records."""
        live = self._live
        count = 0
        for record in records:
            if record.seq <= self.seq:
                continue
            count += 1
            changed: dict[UUID, Order] = {}
            placed: set[UUID] = set()
            known = None if decoded is None else decoded.get(record.seq)
            for index, recorded in enumerate(record.events):
                if not recorded.topic.startswith(_ORDER_TOPIC):
                    continue
                event = known[index] if known is not None else app.decode_event(recorded)
                if isinstance(event, Order.Placed):
                    order = cast(Order, event.mutate(None))
                    live[order.id] = order
                    placed.add(order.id)
                else:
                    found = live.get(event.originator_id)
                    if found is None:
                        found = _order_before(app, event.originator_id, event)
                        if found is None:
                            continue
                    order = found
                    event.mutate(order)
                    if isinstance(event, Order.Filled):
                        self._add_fill(self._fill_of(order, event, record.seq))
                changed[order.id] = order
            for order in changed.values():
                instrument = self.instruments[order.symbol]
                view = OrderView.of(order, instrument, self.shard_id, record.seq)
                self._put(view, record.seq if order.id in placed else None)
                if not order.is_open:
                    live.pop(order.id, None)
            self.seq = record.seq
        self._undo.clear()  # entries up to here came from the store: none to undo
        self._undo_floor = self.seq
        return count

    def follow_open_orders(self, app: ShardApp) -> None:
        """(writer thread, the overlay at the app's seq) Keep a copy of each open order, so
        records that later change an order placed before the overlay's records (a standby
        replicating) are indexed without reading the order from the store."""
        if self.seq != app.seq:
            return
        for order in app.engine.open_orders():
            if order.id not in self._live:
                self._live[order.id] = copy.copy(order)

    def _fill_of(self, order: Order, event: Order.Filled, seq: int) -> FillView:
        instrument = self.instruments[order.symbol]
        return FillView(
            event.trade_id,
            self.shard_id,
            order.owner,
            order.symbol,
            order.id,
            order.side,
            instrument.ticks_to_price(event.price_ticks),
            instrument.lots_to_quantity(event.quantity_lots),
            event.fee,
            event.liquidity,
            seq,
        )

    def _entry(self, order_id: UUID) -> tuple[OrderView, int | None] | None:
        view = self.orders.get(order_id)
        return None if view is None else (view, self._placed.get(order_id))

    def _put(self, view: OrderView, placed_seq: int | None) -> None:
        order_id = view.order_id
        if order_id not in self.orders:
            self._order_ids.setdefault(view.account, set()).add(order_id)
            self._placed[order_id] = placed_seq
        elif placed_seq is not None:
            self._placed[order_id] = placed_seq
        self.orders[order_id] = view

    def _drop(self, order_id: UUID) -> None:
        view = self.orders.pop(order_id)
        self._placed.pop(order_id, None)
        ids = self._order_ids[view.account]
        ids.discard(order_id)
        if not ids:
            del self._order_ids[view.account]

    def _add_fill(self, fill: FillView) -> None:
        self._fills.setdefault(fill.account, []).append(fill)
        self._fill_count += 1

    # -- reads (writer thread, through Facade.query) ----------------------------------------

    def order(self, order_id: UUID) -> OrderView | None:
        return self.orders.get(order_id)

    def account_orders(self, account: str) -> list[tuple[OrderView, int | None]]:
        """The account's order views held here, each with its placement seq (None: placed
        before the floor, the read models know it)."""
        return [
            (self.orders[order_id], self._placed[order_id])
            for order_id in self._order_ids.get(account, ())
        ]

    def account_fills(self, account: str) -> list[FillView]:
        """The account's fills held here, in trade order."""
        return list(self._fills.get(account, ()))


def _order_before(app: ShardApp, order_id: UUID, event: Aggregate.Event) -> Order | None:
    """The order as it stood before `event`, from the shard's event store (an order placed
    before the overlay's records and closed since its start); None if the store no longer has
    it (archived): the read models show the change once they reach it."""
    try:
        return cast(Order, app.repository.get(order_id, version=event.originator_version - 1))
    except Exception as exc:
        log.warning(
            "order history shard=%s order=%s not found in the store (%s): its change at "
            "version %s is left to the read models",
            app.shard_id,
            order_id,
            type(exc).__name__,
            event.originator_version,
        )
        return None


def _pop_newest(by_account: dict[str, list[FillView]], account: str) -> None:
    entries = by_account[account]
    entries.pop()
    if not entries:
        del by_account[account]
