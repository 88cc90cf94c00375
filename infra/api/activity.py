"""Per-account index of orders and fills of one shard, for listings the engine cannot answer.

The engine holds open orders only; closed ones live in the event store, keyed by id. Listing an
account's orders or trades needs an index by account. This one is in memory: built at start
from the shard's whole WAL (Order events only; on a node in the background, see
Facade.warm_activity), then kept current on the writer thread from each outcome as its batch is
prepared. Those entries come before the batch is durable, so the index keeps an undo journal of
its last UNDO_SEQS seqs: when the shard recovers after a batch failed to land, it takes back
what came from beyond the recovered seq, instead of scanning the whole WAL again. It costs one
OrderView per order ever placed and one FillView per execution side, and a WAL scan at start;
the read models of the projection workers replace it when they land.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import Aggregate

from application.shard.app import Outcome, ShardApp
from application.views import FillView, OrderView
from application.wal.records import WalRecord
from domain.order import Order
from domain.values import Instrument, Liquidity

log = logging.getLogger("exchange_dr.api.activity")

_ORDER_TOPIC = "domain.order:"

UNDO_SEQS = 10_000
"""How many of the newest seqs the undo journal covers: far more than the batches that can be
prepared beyond the durable seq (the one committing and the one built on it)."""

# (seq, order id, the order's view before) for an order; (seq, None, account) for a fill
_Undo = tuple[int, UUID | None, "OrderView | str | None"]


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing and the position to continue after (None: nothing more)."""

    items: tuple[OrderView | FillView, ...]
    next_position: int | None


class ShardActivity:
    """Orders and fills of one shard by account. Mutated only on the shard's writer thread."""

    def __init__(self, shard_id: str, instruments: Iterable[Instrument], *, seq: int = 0) -> None:
        """An empty index; with `seq`, of the commands after it (what came before is elsewhere:
        a warm-up builds it)."""
        self.shard_id = shard_id
        self.instruments = {i.symbol: i for i in instruments}
        self.orders: dict[UUID, OrderView] = {}
        self._order_ids: dict[str, list[UUID]] = {}
        self._fills: dict[str, list[FillView]] = {}
        self._live: dict[UUID, Order] = {}
        self.seq = seq
        self._undo: deque[_Undo] = deque()
        self._undo_floor = seq  # the journal holds every entry after this seq

    # -- writes (writer thread) -------------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        """Take the orders and executions of a committed command into the index."""
        result = outcome.result
        if result is None or outcome.duplicate:
            return
        seq = outcome.seq
        undo = self._undo
        for aggregate in result.touched:
            if isinstance(aggregate, Order):
                view = OrderView.of(
                    aggregate, self.instruments[aggregate.symbol], self.shard_id, seq
                )
                undo.append((seq, view.order_id, self.orders.get(view.order_id)))
                self._put(view)
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
                    outcome.seq,
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
                    outcome.seq,
                )
            )
        self.seq = max(self.seq, seq)
        while undo and undo[0][0] <= seq - UNDO_SEQS:
            self._undo_floor = undo.popleft()[0]

    def rollback(self, seq: int) -> bool:
        """Take back what commands beyond `seq` put in the index (their batch did not land),
        newest first. False if the journal does not reach back to `seq`: build it again."""
        if self._undo_floor > seq:
            return False
        undo = self._undo
        while undo and undo[-1][0] > seq:
            _, order_id, before = undo.pop()
            if order_id is None:
                assert isinstance(before, str)
                _pop_newest(self._fills, before)
            elif isinstance(before, OrderView):
                self.orders[order_id] = before
            else:  # placed by that command: it was the newest of its account
                _pop_newest(self._order_ids, self.orders.pop(order_id).account)
        self.seq = min(self.seq, seq)
        return True

    def _journal_from(self, seq: int) -> None:
        """Entries up to `seq` came from elsewhere than `record` (the WAL): none to undo."""
        self._undo.clear()
        self._undo_floor = seq

    def rebuild(self, app: ShardApp, progress: Callable[[int], None] | None = None) -> int:
        """Index the WAL up to the app's seq, from scratch, on the writer thread: the blocking
        build of `create_app` without a warm-up (tests, tools)."""
        self.orders, self._order_ids, self._fills = {}, {}, {}
        self._live = {}
        self.seq = 0
        self._journal_from(0)
        if app.needs_recovery:
            app.recover()
        return self.build(app, app.seq, progress)

    def build(
        self, app: ShardApp, upto_seq: int, progress: Callable[[int], None] | None = None
    ) -> int:
        """Index the stored WAL from what is indexed up to `upto_seq`. It reads the store and
        decodes, and touches nothing of the app's hot state: for an index not in use yet, any
        thread may run it (a node's start indexes in the background)."""
        started = time.monotonic()
        records = 0
        for record in app.store.iter_records(self.shard_id, self.seq, upto_seq=upto_seq):
            records += 1
            self.index_records(app, [record])
            if progress is not None and records % 10_000 == 0:
                progress(records)
        self.seq = max(self.seq, upto_seq)
        self._journal_from(self.seq)
        log.info(
            "activity index shard=%s seq=%s records=%s orders=%s seconds=%.2f",
            self.shard_id,
            self.seq,
            records,
            len(self.orders),
            time.monotonic() - started,
        )
        return records

    def index_records(
        self,
        app: ShardApp,
        records: Iterable[WalRecord],
        decoded: Mapping[int, Sequence[Aggregate.Event]] | None = None,
    ) -> None:
        """Index records that follow what is indexed (a standby calls this as it replicates).
        `decoded`: the records' events already decoded, by seq (what the standby applied)."""
        live = self._live
        for record in records:
            if record.seq <= self.seq:
                continue
            changed: dict[UUID, Order] = {}
            known = None if decoded is None else decoded.get(record.seq)
            for index, recorded in enumerate(record.events):
                if not recorded.topic.startswith(_ORDER_TOPIC):
                    continue
                event = known[index] if known is not None else app.decode_event(recorded)
                if isinstance(event, Order.Placed):
                    order = cast(Order, event.mutate(None))
                    live[order.id] = order
                else:
                    found = live.get(event.originator_id)
                    if found is None:
                        continue
                    order = found
                    event.mutate(order)
                    if isinstance(event, Order.Filled):
                        self._add_fill(self._fill_of(order, event, record.seq))
                changed[order.id] = order
            for order in changed.values():
                self._put(
                    OrderView.of(order, self.instruments[order.symbol], self.shard_id, record.seq)
                )
                if not order.is_open:
                    live.pop(order.id, None)
            self.seq = record.seq
        self._journal_from(self.seq)

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

    def _put(self, view: OrderView) -> None:
        if view.order_id not in self.orders:
            self._order_ids.setdefault(view.account, []).append(view.order_id)
        self.orders[view.order_id] = view

    def _add_fill(self, fill: FillView) -> None:
        self._fills.setdefault(fill.account, []).append(fill)

    # -- reads (writer thread, through ShardWriter.query) -----------------------------------

    def order(self, order_id: UUID) -> OrderView | None:
        return self.orders.get(order_id)

    def list_orders(
        self, account: str, *, symbol: str | None, status: str | None, start: int, limit: int
    ) -> Page:
        """The account's orders in placement order, from position `start`."""
        ids = self._order_ids.get(account, [])
        found: list[OrderView | FillView] = []
        position = start
        while position < len(ids) and len(found) < limit:
            view = self.orders[ids[position]]
            position += 1
            if symbol is not None and view.symbol != symbol:
                continue
            if status is not None and view.status != status:
                continue
            found.append(view)
        return Page(tuple(found), position if position < len(ids) else None)

    def list_fills(self, account: str, *, symbol: str | None, start: int, limit: int) -> Page:
        """The account's executions in trade order, from position `start`."""
        fills = self._fills.get(account, [])
        found: list[OrderView | FillView] = []
        position = start
        while position < len(fills) and len(found) < limit:
            fill = fills[position]
            position += 1
            if symbol is None or fill.symbol == symbol:
                found.append(fill)
        return Page(tuple(found), position if position < len(fills) else None)


def _pop_newest(by_account: dict[str, list[Any]], account: str) -> None:
    entries = by_account[account]
    entries.pop()
    if not entries:
        del by_account[account]
