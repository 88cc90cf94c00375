"""Post-drill audit: balances and positions recomputed from the trade log alone, then compared.

The recomputation reads only money movements (Deposited, Withdrawn), order placements and the
two Filled events of each trade; it never looks at what the aggregates applied (Settled,
Traded, FeeCollected, margins). Each trade is counted once, from its maker/taker pair, in
trade-id order (the engine's execution order): position arithmetic is path-dependent, and a
WAL record stores events grouped by aggregate (all of a taker's fills, then its makers'), so
the order is taken from the trade ids rather than from where the events happen to be stored.

Conservation: for every trade side, realized tick-lots minus the change of entry cost equals
-price*delta exactly, so over both sides of a trade it is zero. Hence, with open positions,
sum(balances incl. fee account) == deposits - withdrawals + sum(cost_ticklots * contract);
once every position is flat this is the plain "balances == deposits - withdrawals".
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from application.recovery.replay import chain_start, decoder_for, raw_pages
from application.shard.app import ShardApp
from application.wal.chain import ChainCursor
from application.wal.records import WALCorruptionError, WALGapError, compute_checksum, iter_payload
from domain.account import FEE_OWNER, Account
from domain.engine import ShardEngine
from domain.errors import InvalidAmount
from domain.order import Order
from domain.position import Position, apply_trade
from domain.values import Instrument, Liquidity, Side, money, money_units
from infra.bootstrap import make_shard_app
from infra.settings import Settings

INPUT_EVENTS: tuple[type, ...] = (
    Account.Opened,
    Account.Deposited,
    Account.Withdrawn,
    Order.Placed,
    Order.Filled,
)
"""Everything the recomputation reads; any other event is skipped undecoded."""
INPUT_TOPICS = frozenset(get_topic(kind) for kind in INPUT_EVENTS)


@dataclass(frozen=True, slots=True)
class _OrderInfo:
    account_id: UUID
    owner: str
    symbol: str
    side: Side
    quantity_lots: int


@dataclass(frozen=True, slots=True)
class _Fill:
    order_id: UUID
    price_ticks: int
    quantity_lots: int
    fee: Decimal
    liquidity: Liquidity
    counterparty_order_id: UUID


@dataclass(slots=True)
class PositionTotals:
    """One account's exposure in one symbol, rebuilt from its trades."""

    size_lots: int = 0
    cost_ticklots: int = 0
    realized_ticklots: int = 0


@dataclass(slots=True)
class Expected:
    """What the shard must hold according to its trade log and money movements."""

    shard_id: str
    instruments: dict[str, Instrument]
    balances_e8: dict[UUID, int] = field(default_factory=dict)
    positions: dict[tuple[UUID, str], PositionTotals] = field(default_factory=dict)
    filled_lots: dict[UUID, int] = field(default_factory=dict)
    fees_collected_e8: int = 0
    net_deposits_e8: int = 0
    trades: int = 0
    names: dict[UUID, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """Faults of the log itself: one-sided or duplicated trades, sides that disagree."""

    @property
    def fee_account_id(self) -> UUID:
        return Account.fee_account_id(self.shard_id)


def recompute(
    events: Iterable[object], shard_id: str, instruments: Sequence[Instrument]
) -> Expected:
    """Rebuild balances, positions and collected fees from a shard's events in stored order."""
    expected = Expected(shard_id, {i.symbol: i for i in instruments})
    names = expected.names
    names[expected.fee_account_id] = FEE_OWNER
    balances: defaultdict[UUID, int] = defaultdict(int)
    orders: dict[UUID, _OrderInfo] = {}
    fills: defaultdict[int, list[_Fill]] = defaultdict(list)
    for event in events:
        if isinstance(event, Order.Filled):
            fills[event.trade_id].append(
                _Fill(
                    event.originator_id,
                    event.price_ticks,
                    event.quantity_lots,
                    event.fee,
                    event.liquidity,
                    event.counterparty_order_id,
                )
            )
        elif isinstance(event, Order.Placed):
            if event.originator_id in orders:
                expected.problems.append(f"order {event.originator_id}: placed twice")
            orders[event.originator_id] = _OrderInfo(
                event.account_id, event.owner, event.symbol, event.side, event.quantity_lots
            )
            names.setdefault(event.account_id, event.owner)
        elif isinstance(event, Account.Deposited | Account.Withdrawn):
            units = _units(event.amount, event.originator_id, expected)
            if isinstance(event, Account.Withdrawn):
                units = -units
            balances[event.originator_id] += units
            expected.net_deposits_e8 += units
        elif isinstance(event, Account.Opened):
            names[event.originator_id] = event.owner
    for trade_id in sorted(fills):
        pair = _pair(trade_id, fills[trade_id], orders, expected)
        if pair is not None:
            _book_trade(trade_id, pair, orders, balances, expected)
    for order_id, lots in expected.filled_lots.items():
        info = orders[order_id]
        if lots > info.quantity_lots:
            expected.problems.append(
                f"order {order_id} ({info.owner}): filled {lots} lots of {info.quantity_lots}"
            )
    if expected.fees_collected_e8:
        balances[expected.fee_account_id] += expected.fees_collected_e8
    expected.balances_e8 = dict(balances)
    return expected


def _units(amount: Decimal, account_id: UUID, expected: Expected) -> int:
    try:
        return money_units(amount)
    except InvalidAmount:
        expected.problems.append(f"account {account_id}: amount {amount} is off the 1e-8 grid")
        return 0


def _pair(
    trade_id: int, fills: list[_Fill], orders: dict[UUID, _OrderInfo], expected: Expected
) -> tuple[_Fill, _Fill] | None:
    """The (maker, taker) sides of a trade if they agree; otherwise record why not."""
    problems = expected.problems
    makers = [f for f in fills if f.liquidity == Liquidity.MAKER]
    takers = [f for f in fills if f.liquidity == Liquidity.TAKER]
    if len(makers) > 1 or len(takers) > 1:
        problems.append(
            f"trade {trade_id}: duplicated trade id, {len(fills)} fills recorded "
            f"({len(makers)} maker, {len(takers)} taker)"
        )
    if not makers or not takers:
        (only,) = fills[:1]
        problems.append(
            f"trade {trade_id}: seen on one side only ({only.liquidity} fill of order "
            f"{only.order_id}, counterparty {only.counterparty_order_id} has none); not counted"
        )
        return None
    maker, taker = makers[0], takers[0]
    faults = []
    if (maker.price_ticks, maker.quantity_lots) != (taker.price_ticks, taker.quantity_lots):
        faults.append(
            f"maker {maker.quantity_lots}@{maker.price_ticks} vs taker "
            f"{taker.quantity_lots}@{taker.price_ticks}"
        )
    if maker.quantity_lots <= 0 or maker.price_ticks <= 0:
        faults.append("non-positive price or quantity")
    if maker.counterparty_order_id != taker.order_id or (
        taker.counterparty_order_id != maker.order_id
    ):
        faults.append("counterparty order ids do not point at each other")
    maker_info, taker_info = orders.get(maker.order_id), orders.get(taker.order_id)
    if maker_info is None or taker_info is None:
        faults.append("an order of the trade was never placed")
    elif maker_info.symbol != taker_info.symbol or maker_info.side == taker_info.side:
        faults.append(
            f"maker {maker_info.side} {maker_info.symbol} vs taker "
            f"{taker_info.side} {taker_info.symbol}"
        )
    elif maker_info.symbol not in expected.instruments:
        faults.append(f"symbol {maker_info.symbol} is not traded on this shard")
    elif maker_info.account_id == taker_info.account_id:
        faults.append(f"self-trade of {maker_info.owner}")
    if faults:
        problems.append(f"trade {trade_id}: sides disagree: {'; '.join(faults)}; not counted")
        return None
    return maker, taker


def _book_trade(
    trade_id: int,
    pair: tuple[_Fill, _Fill],
    orders: dict[UUID, _OrderInfo],
    balances: defaultdict[UUID, int],
    expected: Expected,
) -> None:
    """Apply one agreed trade to both sides' positions and balances, fees at the schedule."""
    expected.trades += 1
    instrument = expected.instruments[orders[pair[0].order_id].symbol]
    maker_fee_e8, taker_fee_e8 = instrument.fees_e8(pair[0].price_ticks * pair[0].quantity_lots)
    for fill, fee_e8 in zip(pair, (maker_fee_e8, taker_fee_e8), strict=True):
        info = orders[fill.order_id]
        if fill.fee != money(fee_e8):
            expected.problems.append(
                f"trade {trade_id}: {fill.liquidity} fee of order {fill.order_id} recorded "
                f"{_fmt(fill.fee)}, schedule says {_fmt(money(fee_e8))}"
            )
        key = (info.account_id, info.symbol)
        totals = expected.positions.get(key)
        if totals is None:
            totals = expected.positions[key] = PositionTotals()
        totals.size_lots, totals.cost_ticklots, realized = apply_trade(
            totals.size_lots,
            totals.cost_ticklots,
            info.side.sign * fill.quantity_lots,
            fill.price_ticks,
        )
        totals.realized_ticklots += realized
        balances[info.account_id] += realized * instrument.contract_e8 - fee_e8
        expected.fees_collected_e8 += fee_e8
        expected.filled_lots[fill.order_id] = (
            expected.filled_lots.get(fill.order_id, 0) + fill.quantity_lots
        )


def compare(expected: Expected, engine: ShardEngine) -> list[str]:
    """Readable mismatch lines between the recomputation and the engine's live aggregates."""
    lines = list(expected.problems)
    accounts = {a.id: a for a in engine.accounts()}
    names = {**expected.names, **{a.id: a.owner for a in accounts.values()}}
    fee_id = expected.fee_account_id
    for account_id in sorted(expected.balances_e8.keys() | accounts.keys(), key=str):
        label = f"account {account_id} ({names.get(account_id, '?')})"
        want = money(expected.balances_e8.get(account_id, 0))
        account = accounts.get(account_id)
        what = "fees collected" if account_id == fee_id else "balance"
        if account is None:
            if account_id in expected.balances_e8:
                lines.append(f"{label}: missing from the shard, {what} expected {_fmt(want)}")
        elif account.balance != want:
            lines.append(f"{label}: {what} expected {_fmt(want)}, actual {_fmt(account.balance)}")
    positions = {(p.account_id, p.symbol): p for p in engine.positions()}
    for key in sorted(expected.positions.keys() | positions.keys(), key=str):
        account_id, symbol = key
        label = (
            f"position {Position.create_id(account_id, symbol)} "
            f"({names.get(account_id, '?')} {symbol})"
        )
        totals = expected.positions.get(key, PositionTotals())
        instrument = expected.instruments.get(symbol)
        if instrument is None:
            lines.append(f"{label}: symbol is not traded on this shard")
            continue
        want_pnl = money(totals.realized_ticklots * instrument.contract_e8)
        position = positions.get(key)
        if position is None:
            lines.append(
                f"{label}: missing from the shard, expected size {totals.size_lots} "
                f"cost {totals.cost_ticklots} realized_pnl {_fmt(want_pnl)}"
            )
            continue
        for name, want_value, actual in (
            ("size_lots", totals.size_lots, position.size_lots),
            ("cost_ticklots", totals.cost_ticklots, position.cost_ticklots),
            ("realized_pnl", want_pnl, position.realized_pnl),
        ):
            if want_value != actual:
                lines.append(f"{label}: {name} expected {_fmt(want_value)}, actual {_fmt(actual)}")
    for order in engine.open_orders():
        want_lots = expected.filled_lots.get(order.id, 0)
        if order.filled_lots != want_lots:
            lines.append(
                f"order {order.id} ({order.owner} {order.client_order_id}): filled_lots"
                f" expected {want_lots}, actual {order.filled_lots}"
            )
    lines.extend(_conservation(expected, engine))
    return lines


def _conservation(expected: Expected, engine: ShardEngine) -> list[str]:
    """Checks on the engine's own totals: what one side gains the other side owes."""
    lines = []
    sizes: defaultdict[str, int] = defaultdict(int)
    open_cost_e8 = 0
    for position in engine.positions():
        sizes[position.symbol] += position.size_lots
        instrument = expected.instruments.get(position.symbol)
        if instrument is not None:
            open_cost_e8 += position.cost_ticklots * instrument.contract_e8
    for symbol, total in sorted(sizes.items()):
        if total:
            lines.append(f"conservation {symbol}: position sizes sum to {total} lots, not 0")
    balances = sum((a.balance for a in engine.accounts()), Decimal(0))
    want = money(expected.net_deposits_e8 + open_cost_e8)
    if balances != want:
        lines.append(
            f"conservation: balances incl. fee account sum to {_fmt(balances)}, expected "
            f"{_fmt(want)} (deposits - withdrawals {_fmt(money(expected.net_deposits_e8))}"
            f" + open entry cost {_fmt(money(open_cost_e8))})"
        )
    return lines


def _fmt(value: int | Decimal) -> str:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def input_events(app: ShardApp, upto_seq: int) -> Iterator[object]:
    """The audit's input events of a shard's WAL up to `upto_seq`, every checksum and chain
    link verified; other events are not even decoded."""
    shard_id = app.shard_id
    decode = decoder_for(app.mapper).decode
    expected_seq = 1
    pages = raw_pages(app.store, shard_id, 0, upto_seq)
    chain = ChainCursor(shard_id, legacy_upto=chain_start(app.store, shard_id))
    try:
        for page in pages:
            for row in page:
                seq, epoch, command_type, key, recorded_at_us, payload, checksum, prev, _ = row
                if seq != expected_seq:
                    raise WALGapError(shard_id, expected_seq, seq)
                stored = compute_checksum(
                    shard_id, epoch, seq, command_type, key, recorded_at_us, payload, prev
                )
                if stored != checksum:
                    raise WALCorruptionError(shard_id, seq)
                chain.advance(seq, prev, checksum)
                expected_seq += 1
                try:
                    events = list(iter_payload(payload))
                except (ValueError, KeyError, TypeError) as exc:
                    raise WALCorruptionError(shard_id, seq, f"undecodable payload: {exc}") from None
                for originator_id, version, topic, state in events:
                    if topic in INPUT_TOPICS:
                        yield decode(originator_id, version, topic, state)
    finally:
        pages.close()
    if expected_seq - 1 != upto_seq:
        raise WALGapError(shard_id, upto_seq, expected_seq - 1)


def audit_shard(dsn: str, shard: str) -> dict[str, Any]:
    """Recover the shard from scratch (reads only), recompute from its WAL and compare."""
    started = time.perf_counter()
    app = make_shard_app(Settings.from_env(), shard, dsn=dsn)
    try:
        report = app.recover(from_scratch=True)
        expected = recompute(input_events(app, report.seq), shard, app.instruments)
        mismatches = compare(expected, app.engine)
        if report.checkpoint_hash_matches is False:
            mismatches.append(
                f"checkpoint at or before seq {report.seq}: state hash differs from the replay"
            )
        engine = app.engine
        return {
            "shard": shard,
            "seq": report.seq,
            "accounts": len(engine.accounts()),
            "positions": len(engine.positions()),
            "trades": expected.trades,
            "mismatches": mismatches,
            "seconds": round(time.perf_counter() - started, 3),
        }
    finally:
        app.close()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m infra.drills.audit DSN SHARD`: the audit as JSON; exit 1 on any mismatch."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m infra.drills.audit DSN SHARD", file=sys.stderr)
        return 2
    result = audit_shard(args[0], args[1])
    print(json.dumps(result, indent=2))
    return 1 if result["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
