"""Order and trade history from the region's SQL read models, merged with the unprojected tail.

The read models (projections/read_models) hold every order and trade up to their tracking row;
the overlay (infra/api/activity.py) holds what came after it. A read takes the overlay first
(on the writer thread) and the SQL snapshot second: the tracking row only moves forward and the
overlay is trimmed only behind it, so every change is in one or the other, and per order the
view with the higher seq is the newer. The SQL runs on a small thread pool of its own, off the
event loop and off the writer threads.

Listings keep the order of the in-memory index they replace: orders by placement seq, fills by
trade id with the maker side before the taker side. A page position is the placement seq of the
last order (or `fill_position` of the last fill) returned: the next page starts after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from application.views import FillView, OrderView
from domain.values import Instrument, Liquidity, OrderStatus, Side
from infra.api.activity import fill_position
from projections.read_models.models import OrderRow, TrackingRow, TradeRow
from projections.read_models.projector import PROJECTION

_RELEASED = frozenset(
    str(s) for s in (OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED)
)

SQL_WORKERS = 4
"""Threads for history queries: enough to overlap a few listings, small next to the pool."""


@dataclass(frozen=True, slots=True)
class OrderSlice:
    """Orders of one account from the read models, in placement order, and whether the query
    returned everything that matched (else the last one bounds what the page may show); and
    the rows of the orders asked for by id (the overlay's, whatever their status)."""

    orders: tuple[tuple[OrderView, int], ...]
    complete: bool
    by_id: Mapping[UUID, tuple[OrderView, int]]


@dataclass(frozen=True, slots=True)
class FillSlice:
    """Fills of one account from the read models, by side, each in trade order; a side that
    hit its limit bounds what the page may show."""

    maker: tuple[FillView, ...]
    maker_complete: bool
    taker: tuple[FillView, ...]
    taker_complete: bool


class HistoryReader:
    """Blocking reads of the read models; run them on `pool`."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        instruments: Iterable[Instrument],
        *,
        projection: str = PROJECTION,
    ) -> None:
        self.sessions = sessions
        self.instruments = {i.symbol: i for i in instruments}
        self.projection = projection
        self.pool = ThreadPoolExecutor(SQL_WORKERS, thread_name_prefix="history-sql")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        engine = self.sessions.kw.get("bind")
        if engine is not None:
            engine.dispose()

    def tracked(self) -> dict[str, int]:
        """Each shard's tracking row: the seq up to which the read models hold its history."""
        with self.sessions() as session:
            rows = session.execute(
                select(TrackingRow.shard, TrackingRow.seq).where(
                    TrackingRow.projection == self.projection
                )
            ).all()
        return {shard: int(seq) for shard, seq in rows}

    def order(self, order_id: UUID) -> tuple[OrderView, int] | None:
        """An order by id (any shard) with its placement seq."""
        with self.sessions() as session:
            row = session.get(OrderRow, order_id)
            return None if row is None else (self._order_view(row), row.placed_seq)

    def orders(
        self,
        shard: str,
        account: str,
        *,
        symbol: str | None,
        status: str | None,
        after: int,
        limit: int,
        overlay: Sequence[tuple[OrderView, int | None]] = (),
    ) -> OrderSlice:
        """Orders placed after seq `after` matching the filters, enough for a page of `limit`
        once merged with the account's `overlay` (see `wanted`), read in one snapshot with the
        shard's tracking row."""
        with self.sessions() as session:
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            tracked = session.scalar(
                select(TrackingRow.seq).where(
                    TrackingRow.projection == self.projection, TrackingRow.shard == shard
                )
            )
            rows_wanted, ids = wanted(overlay, int(tracked or 0), limit)
            query = select(OrderRow).where(
                OrderRow.shard == shard, OrderRow.account == account, OrderRow.placed_seq > after
            )
            if symbol is not None:
                query = query.where(OrderRow.symbol == symbol)
            if status is not None:
                query = query.where(OrderRow.status == status)
            rows = session.scalars(query.order_by(OrderRow.placed_seq).limit(rows_wanted)).all()
            known = (
                session.scalars(select(OrderRow).where(OrderRow.order_id.in_(ids))).all()
                if ids
                else []
            )
            views = tuple((self._order_view(row), row.placed_seq) for row in rows)
            by_id = {row.order_id: (self._order_view(row), row.placed_seq) for row in known}
        return OrderSlice(views, len(views) < rows_wanted, by_id)

    def fills(
        self, shard: str, account: str, *, symbol: str | None, after: int, limit: int
    ) -> FillSlice:
        """Up to `limit` fills of each side after position `after`, in trade order."""
        maker_from = (after - 1) // 2 + 1  # 2 * trade_id + 1 > after
        taker_from = (after - 2) // 2 + 1  # 2 * trade_id + 2 > after
        sides: list[tuple[FillView, ...]] = []
        with self.sessions() as session:
            for account_column, first in (
                (TradeRow.maker_account, maker_from),
                (TradeRow.taker_account, taker_from),
            ):
                query = select(TradeRow).where(
                    TradeRow.shard == shard, account_column == account, TradeRow.trade_id >= first
                )
                if symbol is not None:
                    query = query.where(TradeRow.symbol == symbol)
                rows = session.scalars(query.order_by(TradeRow.trade_id).limit(limit)).all()
                maker = account_column is TradeRow.maker_account
                sides.append(tuple(self._fill_view(row, maker=maker) for row in rows))
        return FillSlice(sides[0], len(sides[0]) < limit, sides[1], len(sides[1]) < limit)

    def _order_view(self, row: OrderRow) -> OrderView:
        """The row as the engine's view of the same order would be (same JSON)."""
        instrument = self.instruments[row.symbol]
        return OrderView(
            order_id=row.order_id,
            shard=row.shard,
            account=row.account,
            client_order_id=row.client_order_id,
            symbol=row.symbol,
            side=row.side,
            order_type=row.order_type,
            price=None if row.price_ticks is None else instrument.ticks_to_price(row.price_ticks),
            quantity=instrument.lots_to_quantity(row.quantity_lots),
            filled_quantity=instrument.lots_to_quantity(row.filled_lots),
            status=row.status,
            reject_reason=row.reject_reason,
            time_in_force=row.time_in_force,
            post_only=row.post_only,
            reduce_only=row.reduce_only,
            leverage=row.leverage,
            # the engine releases a closed order's reserve as a plain zero, not a 1e-8 amount
            reserved_margin=Decimal(0) if row.status in _RELEASED else row.reserved_margin,
            seq=row.seq,
        )

    def _fill_view(self, row: TradeRow, *, maker: bool) -> FillView:
        instrument = self.instruments[row.symbol]
        taker_side = Side(row.taker_side)
        return FillView(
            row.trade_id,
            row.shard,
            row.maker_account if maker else row.taker_account,
            row.symbol,
            row.maker_order_id if maker else row.taker_order_id,
            taker_side.opposite if maker else taker_side,
            instrument.ticks_to_price(row.price_ticks),
            instrument.lots_to_quantity(row.quantity_lots),
            row.maker_fee if maker else row.taker_fee,
            Liquidity.MAKER if maker else Liquidity.TAKER,
            row.seq,
        )


# -- merging (pure) -----------------------------------------------------------------------------


def wanted(
    overlay: Sequence[tuple[OrderView, int | None]], tracked: int, limit: int
) -> tuple[int, list[UUID]]:
    """What an order page asks of the read models at tracking seq `tracked`: how many rows, and
    which orders by id. Only an overlay order placed up to `tracked` can be in the read models
    in another state and take one of their rows out of the filter, so the page asks for one
    more row per such order (and one to tell whether there is more). Read by id: the orders
    placed before the overlay (for their placement seq) and the views of a seq up to `tracked`
    (the read models' row may be newer). Both stay small: the overlay is trimmed behind the
    tracking row."""
    may_differ = sum(1 for _, placed in overlay if placed is None or placed <= tracked)
    ids = [view.order_id for view, placed in overlay if placed is None or view.seq <= tracked]
    return limit + may_differ + 1, ids


def merge_orders(
    sql: OrderSlice,
    overlay: Sequence[tuple[OrderView, int | None]],
    *,
    symbol: str | None,
    status: str | None,
    after: int,
    limit: int,
) -> tuple[list[OrderView], int | None]:
    """One page of an account's orders on one shard and the position to continue after (None:
    nothing more). `sql` must have been read as `wanted` says: an overlay view takes at most
    one row out of the filter, so a full slice still fills the page and proves there is more."""
    cutoff = None if sql.complete or not sql.orders else sql.orders[-1][1]
    best: dict[UUID, tuple[OrderView, int]] = {view.order_id: (view, p) for view, p in sql.orders}
    for view, placed in overlay:
        current = best.get(view.order_id) or sql.by_id.get(view.order_id)
        seq = placed if placed is not None else None if current is None else current[1]
        if seq is None:
            continue  # placed before the overlay and not in the read models: not listed
        if current is None or view.seq > current[0].seq:
            best[view.order_id] = (view, seq)
        else:  # projected in a newer state since the overlay was read
            best[view.order_id] = current
    rows = sorted(
        (
            (seq, view)
            for view, seq in best.values()
            if seq > after
            and (cutoff is None or seq <= cutoff)
            and (symbol is None or view.symbol == symbol)
            and (status is None or view.status == status)
        ),
        key=lambda row: row[0],
    )
    page = rows[:limit]
    return [view for _, view in page], (page[-1][0] if len(rows) > limit else None)


def merge_fills(
    sql: FillSlice, overlay: Sequence[FillView], *, symbol: str | None, after: int, limit: int
) -> tuple[list[FillView], int | None]:
    """One page of an account's fills on one shard and the position to continue after. Each
    side of `sql` must have been asked for `limit + 1` rows; fills never change, a fill in both
    is the same fill."""
    bounds = [
        fill_position(side[-1])
        for side, complete in ((sql.maker, sql.maker_complete), (sql.taker, sql.taker_complete))
        if side and not complete
    ]
    cutoff = min(bounds) if bounds else None
    found: dict[int, FillView] = {}
    for fill in (*sql.maker, *sql.taker, *overlay):
        position = fill_position(fill)
        if position <= after or (cutoff is not None and position > cutoff):
            continue
        if symbol is not None and fill.symbol != symbol:
            continue
        found.setdefault(position, fill)
    positions = sorted(found)
    page = positions[:limit]
    return [found[p] for p in page], (page[-1] if len(positions) > limit else None)
