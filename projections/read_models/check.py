"""Compare the read models with an engine's live state, or with a projection from scratch of a
WAL computed in memory: the projections' own audits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from application.ports import WalStore
from domain.engine import ShardEngine
from domain.values import Instrument, OrderStatus
from projections.read_models.models import BalanceRow, OrderRow, PositionRow, TradeRow
from projections.read_models.views import ViewRows, project_record

_TABLES: tuple[tuple[str, Any, tuple[str, ...]], ...] = (
    ("orders", OrderRow, ("order_id",)),
    ("trades", TradeRow, ("shard", "trade_id")),
    ("positions", PositionRow, ("position_id",)),
    ("balances", BalanceRow, ("account_id",)),
)

_OPEN = (str(OrderStatus.NEW), str(OrderStatus.PARTIALLY_FILLED))


def projections_match_engine(session: Session, engine: ShardEngine) -> list[str]:
    """Differences between the views of `engine.shard_id` and the engine (empty: they agree).

    Compared: every open order, every account's balance and margins, every position, and the
    number of orders and trades the engine has numbered (its priority and trade counters).
    """
    shard = engine.shard_id
    problems: list[str] = []

    live_orders = {
        o.id: (
            o.owner,
            o.symbol,
            str(o.status),
            o.filled_lots,
            o.quantity_lots,
            _d(o.reserved_margin),
        )
        for o in engine.open_orders()
    }
    rows = session.scalars(
        select(OrderRow).where(OrderRow.shard == shard, OrderRow.status.in_(_OPEN))
    )
    viewed_orders = {
        r.order_id: (
            r.account,
            r.symbol,
            r.status,
            r.filled_lots,
            r.quantity_lots,
            _d(r.reserved_margin),
        )
        for r in rows
    }
    problems += _diff("open order", live_orders, viewed_orders)

    live_accounts = {
        a.owner: (_d(a.balance), _d(a.order_margin), _d(a.position_margin), _d(a.available))
        for a in engine.accounts()
    }
    viewed_accounts = {
        r.account: (_d(r.balance), _d(r.order_margin), _d(r.position_margin), _d(r.available))
        for r in session.scalars(select(BalanceRow).where(BalanceRow.shard == shard))
    }
    problems += _diff("balance", live_accounts, viewed_accounts)

    live_positions = {
        (p.owner, p.symbol): (
            p.size_lots,
            p.cost_ticklots,
            p.leverage,
            _d(p.margin),
            _d(p.realized_pnl),
        )
        for p in engine.positions()
    }
    viewed_positions = {
        (r.account, r.symbol): (
            r.size_lots,
            r.cost_ticklots,
            r.leverage,
            _d(r.margin),
            _d(r.realized_pnl),
        )
        for r in session.scalars(select(PositionRow).where(PositionRow.shard == shard))
    }
    problems += _diff("position", live_positions, viewed_positions)

    counters = engine.counters()
    orders = session.scalar(select(func.count()).where(OrderRow.shard == shard))
    if orders != counters["next_priority"] - 1:
        problems.append(
            f"orders: views hold {orders}, engine placed {counters['next_priority'] - 1}"
        )
    trades, last_trade = session.execute(
        select(func.count(), func.max(TradeRow.trade_id)).where(TradeRow.shard == shard)
    ).one()
    expected_trades = counters["next_trade_id"] - 1
    if trades != expected_trades or (last_trade or 0) != expected_trades:
        problems.append(
            f"trades: views hold {trades} (last id {last_trade}), engine numbered {expected_trades}"
        )
    return problems


def _d(value: Decimal) -> Decimal:
    """Scale-free form, so 1.50000000 from NUMERIC equals 1.5 from the engine."""
    return value.normalize() if value else Decimal(0)


def _diff(
    kind: str, live: dict[Any, Any], viewed: dict[Any, Any], source: str = "engine"
) -> list[str]:
    problems = [f"{kind} {key}: missing from the views" for key in _sorted(live.keys() - viewed)]
    problems += [
        f"{kind} {key}: in the views, not in the {source}" for key in _sorted(viewed.keys() - live)
    ]
    for key in _sorted(live.keys() & viewed.keys()):
        if live[key] != viewed[key]:
            problems.append(f"{kind} {key}: {source} {live[key]} != views {viewed[key]}")
    return problems


def _sorted(keys: Iterable[Any]) -> list[Any]:
    return sorted(keys, key=str)


def project_in_memory(
    store: WalStore, shard: str, upto: int, instruments: Mapping[str, Instrument]
) -> dict[str, list[Any]]:
    """The rows a projection from scratch of `store`'s records 1..upto gives, by table (no
    database: the views' own functions over every record)."""
    rows = ViewRows(instruments)
    for record in store.iter_records(shard, 0, upto_seq=upto):
        project_record(rows, record)
    trades = [r for r in rows.added if isinstance(r, TradeRow)]
    return {
        "orders": list(rows.orders.values()),
        "trades": trades,
        "positions": list(rows.positions.values()),
        "balances": list(rows.balances.values()),
    }


def views_match_rows(
    session: Session, shard: str, expected: Mapping[str, list[Any]]
) -> tuple[list[str], dict[str, int]]:
    """Differences between the shard's views and `expected` (every column of every row of
    orders, trades, positions, balances), and how many rows each view holds."""
    problems: list[str] = []
    counts: dict[str, int] = {}
    for name, table, key in _TABLES:
        columns = [c.name for c in table.__table__.columns]

        def values(row: Any, columns: list[str] = columns) -> tuple[Any, ...]:
            return tuple(_value(getattr(row, c)) for c in columns)

        def key_of(row: Any, key: tuple[str, ...] = key) -> tuple[Any, ...]:
            return tuple(getattr(row, k) for k in key)

        stored = {
            key_of(r): values(r) for r in session.scalars(select(table).where(table.shard == shard))
        }
        wanted = {key_of(r): values(r) for r in expected[name]}
        counts[name] = len(stored)
        problems += _diff(name[:-1], wanted, stored, "projection from scratch")
    return problems, counts


def _value(value: Any) -> Any:
    return _d(value) if isinstance(value, Decimal) else value
