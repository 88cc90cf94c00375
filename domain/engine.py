"""ShardEngine: the matching engine of one shard, tying order books to the aggregates.

Every command is validated and fully planned against unchanged state first (a DomainError
leaves nothing behind); only then are events triggered. Self-trade prevention: a taker that
would meet a resting order of its own account stops there and its remainder EXPIRES with
SELF_TRADE (the resting order is kept). Reduce-only resting orders that a fill would turn into
an increase are filled only up to the position and the rest EXPIRES. Liquidation is out of
this layer: a close at a loss larger than the margin it frees can leave `available` negative,
after which new orders and withdrawals are refused until a deposit covers it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from operator import attrgetter
from typing import TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.account import FEE_OWNER, Account
from domain.commands import CancelOrder, Command, Deposit, PlaceOrder, Withdraw
from domain.errors import InvariantViolation, UnknownAccount, UnknownOrder, UnknownSymbol
from domain.invariants import check_shard
from domain.order import Order
from domain.orderbook import BookDepth, OrderBook
from domain.placement import Placement, plan_placement
from domain.position import Position, apply_trade
from domain.trades import CommandResult, Trade
from domain.values import (
    CLOSED_STATUSES,
    Instrument,
    Liquidity,
    RejectReason,
    money,
    money_units,
)

__all__ = ["CommandResult", "ShardEngine", "Trade"]

_MAKER, _TAKER = Liquidity.MAKER, Liquidity.TAKER

_A = TypeVar("_A", bound=Aggregate)


class ShardEngine:
    """In-memory state of one shard: books, accounts, positions and open orders."""

    def __init__(self, shard_id: str, instruments: Sequence[Instrument]) -> None:
        self.shard_id = shard_id
        self.instruments: dict[str, Instrument] = {i.symbol: i for i in instruments}
        self.books: dict[str, OrderBook] = {s: OrderBook(s) for s in self.instruments}
        self._accounts: dict[str, Account] = {}
        self._accounts_by_id: dict[UUID, Account] = {}
        self._positions: dict[tuple[str, str], Position] = {}
        self._positions_by_id: dict[UUID, Position] = {}
        self._orders: dict[int, Order] = {}  # by the id's integer, as the books key them
        self._leverage_in_use: dict[tuple[str, str], list[int]] = {}  # [leverage, open orders]
        self._next_priority = 1
        self._next_trade_id = 1

    # ---- queries -------------------------------------------------------------------------

    def order(self, order_id: UUID) -> Order | None:
        """An open order."""
        return self._orders.get(order_id.int)

    def account(self, owner: str) -> Account | None:
        """An owner's account on this shard."""
        return self._accounts.get(owner)

    def fee_account(self) -> Account | None:
        """The account every fee is credited to."""
        return self._accounts.get(FEE_OWNER)

    def position(self, owner: str, symbol: str) -> Position | None:
        """An owner's position in a symbol (flat positions are kept)."""
        return self._positions.get((owner, symbol))

    def depth(self, symbol: str, levels: int) -> BookDepth:
        """Aggregated top of a book."""
        return self._book(symbol).depth(levels)

    def open_orders(self) -> list[Order]:
        """Open orders in placement order."""
        return sorted(self._orders.values(), key=lambda o: o.priority)

    def accounts(self) -> list[Account]:
        """Every account, fee account included."""
        return list(self._accounts.values())

    def positions(self) -> list[Position]:
        """Every position, flat ones included."""
        return list(self._positions.values())

    def leverage_in_use(self, owner: str, symbol: str) -> int | None:
        """Leverage every new order of the owner in the symbol must use, if one is set."""
        position = self._positions.get((owner, symbol))
        if position is not None and position.size_lots:
            return position.leverage
        entry = self._leverage_in_use.get((owner, symbol))
        return entry[0] if entry else None

    def live_aggregates(self) -> list[Aggregate]:
        """Everything a checkpoint must hold: accounts, positions and open orders."""
        return [*self._accounts.values(), *self._positions.values(), *self.open_orders()]

    def counters(self) -> dict[str, int]:
        """Sequence counters a checkpoint must carry to continue exactly."""
        return {"next_priority": self._next_priority, "next_trade_id": self._next_trade_id}

    # ---- commands ------------------------------------------------------------------------

    def execute(self, command: Command) -> CommandResult:
        """Validate, then apply one command; raises DomainError with state untouched."""
        if command.account == FEE_OWNER:
            raise UnknownAccount("the fee account takes no commands", field="account")
        if isinstance(command, PlaceOrder):
            return self._place(command)
        if isinstance(command, CancelOrder):
            return self._cancel(command)
        if isinstance(command, Deposit):
            return self._deposit(command)
        if isinstance(command, Withdraw):
            return self._withdraw(command)
        raise TypeError(f"not a shard command: {command!r}")

    def _deposit(self, command: Deposit) -> CommandResult:
        money_units(command.amount)
        Account.check_amount(command.amount)
        account = self._accounts.get(command.account)
        if account is None:
            account = Account.open(self.shard_id, command.account)
            self._register_account(account)
        account.deposit(command.amount)
        return CommandResult(touched=(account,), account=account)

    def _withdraw(self, command: Withdraw) -> CommandResult:
        account = self._existing_account(command.account)
        money_units(command.amount)
        account.withdraw(command.amount)
        return CommandResult(touched=(account,), account=account)

    def _cancel(self, command: CancelOrder) -> CommandResult:
        account = self._existing_account(command.account)
        order = self._orders.get(command.order_id.int)
        if order is None or order.owner != command.account:
            raise UnknownOrder(f"no open order {command.order_id} for {command.account}",
                               field="order_id")
        self.books[order.symbol].cancel(order.id)
        released = order.reserved_margin
        order.cancel()
        self._forget_order(order)
        account.change_margin(account.order_margin - released, account.position_margin)
        return CommandResult(touched=(order, account), order=order, account=account)

    def _place(self, command: PlaceOrder) -> CommandResult:
        instrument = self.instruments.get(command.symbol)
        if instrument is None:
            raise UnknownSymbol(f"{command.symbol} is not traded on shard {self.shard_id}",
                                field="symbol")
        account = self._accounts.get(command.account)
        if account is None:
            raise UnknownAccount(f"no account {command.account!r} on shard {self.shard_id}",
                                 field="account")
        key = (command.account, command.symbol)
        position = self._positions.get(key)
        if position is not None and position.size_lots:
            leverage: int | None = position.leverage
        else:  # leverage_in_use(), inlined: this runs once per placement
            in_use = self._leverage_in_use.get(key)
            leverage = in_use[0] if in_use else None
        book = self.books[command.symbol]
        plan = plan_placement(command, instrument, account, position, book, self._orders,
                              leverage, self._positions)
        return self._apply_placement(command, instrument, account, book, plan)

    def _apply_placement(self, command: PlaceOrder, instrument: Instrument, account: Account,
                         book: OrderBook, plan: Placement) -> CommandResult:
        priority = self._next_priority
        self._next_priority = priority + 1
        order = Order.place(plan.order_id, {
            "account_id": account._id, "owner": command.account,
            "client_order_id": command.client_order_id, "symbol": command.symbol,
            "side": command.side, "order_type": command.order_type,
            "price_ticks": command.price_ticks, "quantity_lots": command.quantity_lots,
            "time_in_force": command.time_in_force, "post_only": command.post_only,
            "reduce_only": command.reduce_only, "leverage": command.leverage,
            "priority": priority, "reserve_per_lot": money(plan.reserve_per_lot_e8),
        })
        if plan.reject_reason is not None:
            order.reject(plan.reject_reason)
            return CommandResult(touched=(order,), order=order)
        if plan.fills or plan.maker_expiries:
            return self._trade(command, instrument, account, book, order, plan)
        if not plan.rests:
            order.expire(plan.expire_reason or RejectReason.IOC_REMAINDER)
            return CommandResult(touched=(order,), order=order)
        # most of the flow: meets nothing and rests
        assert command.price_ticks is not None
        book.add(order._id, command.account, command.side, command.price_ticks,
                 command.quantity_lots, priority, command.reduce_only)
        self._remember_order(order)
        account.change_margin(account.order_margin + order.reserved_margin,
                              account.position_margin)
        return CommandResult(touched=(order, account), order=order, account=account)

    def _trade(self, command: PlaceOrder, instrument: Instrument, account: Account,
               book: OrderBook, order: Order, plan: Placement) -> CommandResult:
        """Execute the planned fills: Filled per fill and order, then one Traded per position
        and one Settled per account for the whole command, and the fees collected once."""
        symbol, side = command.symbol, command.side
        touched: dict[int, Aggregate] = {order._id.int: order}
        trades: list[Trade] = []
        makers: dict[str, _Settlement] = {}
        maker_sign = -side.sign
        fees_of = instrument.fees_e8
        orders = self._orders
        taker = _Settlement(account, self._positions.get((command.account, symbol)),
                            command.leverage)
        taker_remaining = command.quantity_lots
        trade_id = self._next_trade_id
        for entry, lots in plan.fills:
            price = entry.price_ticks
            maker_fee, taker_fee = fees_of(price * lots)
            maker = orders[entry.order_id.int]
            book.fill(entry.order_id, lots)
            maker_fee_money = money(maker_fee)
            maker.fill(trade_id, price, lots, maker_fee_money, _MAKER, order._id,
                       maker.reserve_per_lot * (maker.remaining_lots - lots))
            touched[entry.order_id.int] = maker
            settlement = makers.get(entry.owner)
            if settlement is None:
                maker_account = self._accounts[entry.owner]
                settlement = makers[entry.owner] = _Settlement(
                    maker_account, self._positions.get((entry.owner, symbol)), maker.leverage)
            settlement.fill(trade_id, maker_sign * lots, price, maker_fee)
            settlement.released += maker.reserve_per_lot * lots
            if maker.filled_lots == maker.quantity_lots:
                self._forget_order(maker)
            taker_remaining -= lots
            taker_fee_money = money(taker_fee)
            order.fill(trade_id, price, lots, taker_fee_money, _TAKER, entry.order_id,
                       order.reserve_per_lot * taker_remaining)
            trades.append(Trade(trade_id, symbol, price, lots, side, entry.order_id, order._id,
                                entry.owner, command.account, maker_fee_money,
                                taker_fee_money))
            trade_id += 1
        if plan.fills:  # the taker's side as planned: the same arithmetic, done once
            (taker.size_lots, taker.cost_ticklots, taker.realized_ticklots,
             taker.fee_e8) = plan.taker_after
            taker.trade_id = trade_id - 1
        self._next_trade_id = trade_id

        for entry in plan.maker_expiries:
            maker = orders[entry.order_id.int]
            book.cancel(entry.order_id)
            released = maker.reserved_margin
            maker.expire(RejectReason.REDUCE_ONLY_WOULD_INCREASE)
            touched[entry.order_id.int] = maker
            self._forget_order(maker)
            settlement = makers.get(entry.owner)
            if settlement is None:
                settlement = makers[entry.owner] = _Settlement(
                    self._accounts[entry.owner], self._positions.get((entry.owner, symbol)),
                    maker.leverage)
            settlement.released += released

        if plan.rests:
            assert command.price_ticks is not None
            book.add(order._id, command.account, side, command.price_ticks, taker_remaining,
                     order.priority, command.reduce_only)
            self._remember_order(order)
            taker.released = -order.reserved_margin
        elif order.is_open:
            order.expire(plan.expire_reason or RejectReason.IOC_REMAINDER)
        for settlement in makers.values():
            self._settle(settlement, instrument, touched)
        self._settle(taker, instrument, touched)
        fees_e8 = sum(s.fee_e8 for s in makers.values()) + taker.fee_e8
        if fees_e8:
            fee_account = self._fee_account()
            fee_account.collect_fee(money(fees_e8), symbol)
            touched[fee_account._id.int] = fee_account
        return CommandResult(touched=tuple(touched.values()), order=order, account=account,
                             trades=tuple(trades))

    def _settle(self, settlement: _Settlement, instrument: Instrument,
                touched: dict[int, Aggregate]) -> None:
        """One Traded for the position and one Settled for the account, if they changed."""
        account = settlement.account
        margin_before = margin_after = Decimal(0)
        pnl = Decimal(0)
        if settlement.trade_id:
            position = settlement.position
            if position is None:
                position = Position.open(account.id, account.owner, instrument.symbol,
                                         instrument.tick_size, settlement.leverage)
                self._register_position(position)
            else:
                margin_before = position.margin
            margin_after = money(instrument.margin_e8(settlement.cost_ticklots,
                                                      settlement.leverage))
            pnl = money(settlement.realized_ticklots * instrument.contract_e8)
            position.trade(settlement.trade_id, settlement.size_lots, settlement.cost_ticklots,
                           settlement.leverage, margin_after, pnl)
            touched[position._id.int] = position
        fee = money(settlement.fee_e8)
        if fee or pnl or settlement.released or margin_after != margin_before:
            account.settle(instrument.symbol, fee, pnl,
                           account.order_margin - settlement.released,
                           account.position_margin - margin_before + margin_after)
            touched[account._id.int] = account

    # ---- bookkeeping shared by the live and the replay paths -----------------------------

    def _book(self, symbol: str) -> OrderBook:
        book = self.books.get(symbol)
        if book is None:
            raise UnknownSymbol(f"{symbol} is not traded on shard {self.shard_id}",
                                field="symbol")
        return book

    def _existing_account(self, owner: str) -> Account:
        account = self._accounts.get(owner)
        if account is None:
            raise UnknownAccount(f"no account {owner!r} on shard {self.shard_id}",
                                 field="account")
        return account

    def _register_account(self, account: Account) -> None:
        self._accounts[account.owner] = account
        self._accounts_by_id[account.id] = account

    def _register_position(self, position: Position) -> None:
        self._positions[(position.owner, position.symbol)] = position
        self._positions_by_id[position.id] = position

    def _fee_account(self) -> Account:
        account = self._accounts.get(FEE_OWNER)
        if account is None:
            account = Account.open(self.shard_id, FEE_OWNER)
            self._register_account(account)
        return account

    def _remember_order(self, order: Order) -> None:
        self._orders[order._id.int] = order
        key = (order.owner, order.symbol)
        entry = self._leverage_in_use.get(key)
        if entry is None:
            self._leverage_in_use[key] = [order.leverage, 1]
        else:
            entry[1] += 1

    def _forget_order(self, order: Order) -> None:
        if self._orders.pop(order._id.int, None) is None:
            return
        key = (order.owner, order.symbol)
        entry = self._leverage_in_use[key]
        entry[1] -= 1
        if not entry[1]:
            del self._leverage_in_use[key]

    # ---- replay and checkpoints ----------------------------------------------------------

    def apply(self, event: Aggregate.Event) -> None:
        """Apply one recorded event (replay); books follow so FIFO order is reproduced."""
        kind = _EVENT_KINDS.get(type(event))
        if kind is None:
            kind = _EVENT_KINDS[type(event)] = _event_kind(event)
        if kind is _ORDER_EVENT:
            self._apply_order_event(event)
        elif kind is _ACCOUNT_EVENT:
            self._accounts_by_id[event.originator_id].replay(event)
        elif kind is _ORDER_PLACED:
            order = _created(event, Order)
            self._remember_order(order)
            if order.price_ticks is not None:
                self._book(order.symbol).add(order._id, order.owner, order.side,
                                             order.price_ticks, order.quantity_lots,
                                             order.priority, order.reduce_only)
            if order.priority >= self._next_priority:
                self._next_priority = order.priority + 1
        elif kind is _POSITION_EVENT:
            self._positions_by_id[event.originator_id].replay(event)
        elif kind is _ACCOUNT_OPENED:
            self._register_account(_created(event, Account))
        else:
            self._register_position(_created(event, Position))

    def _apply_order_event(self, event: Aggregate.Event) -> None:
        key = event.originator_id.int
        order = self._orders.get(key)
        if order is None:
            raise InvariantViolation(f"event for an order that is not open: {event!r}")
        order.replay(event)
        book = self._book(order.symbol)
        if type(event) is _FILLED:
            trade_id = event.trade_id
            if trade_id >= self._next_trade_id:
                self._next_trade_id = trade_id + 1
            if book.get(order._id) is not None:
                book.fill(order._id, event.quantity_lots)
        if order.status in CLOSED_STATUSES:
            if book.get(order._id) is not None:
                book.cancel(order._id)
            self._forget_order(order)

    @classmethod
    def restore(cls, shard_id: str, instruments: Sequence[Instrument],
                aggregates: Iterable[Aggregate], counters: Mapping[str, int]) -> ShardEngine:
        """Rebuild from a checkpoint; books are refilled in (price, priority) order."""
        engine = cls(shard_id, instruments)
        orders: list[Order] = []
        for aggregate in aggregates:
            if isinstance(aggregate, Order):
                if aggregate.is_open:
                    orders.append(aggregate)
            elif isinstance(aggregate, Account):
                engine._register_account(aggregate)
            elif isinstance(aggregate, Position):
                engine._register_position(aggregate)
            else:
                raise TypeError(f"not an aggregate of this shard: {aggregate!r}")
        # in time priority, each level's FIFO fills in order (checkpoints store them so)
        orders.sort(key=_by_priority)
        remember = engine._remember_order
        books = {symbol: book.add for symbol, book in engine.books.items()}
        for order in orders:
            remember(order)
            price_ticks = order.price_ticks
            if price_ticks is not None:
                add = books.get(order.symbol) or engine._book(order.symbol).add
                add(order._id, order.owner, order.side, price_ticks,
                    order.quantity_lots - order.filled_lots, order.priority, order.reduce_only)
        engine._next_priority = counters["next_priority"]
        engine._next_trade_id = counters["next_trade_id"]
        return engine

    def canonical_lines(self) -> list[str]:
        """Stable text of the whole shard state, in id order."""
        lines = [f"shard {self.shard_id}", *(f"{k} {v}" for k, v in
                                             sorted(self.counters().items()))]
        for symbol in sorted(self.books):
            lines.extend(self.books[symbol].canonical_lines())
        lines.extend(a.canonical() for a in sorted(self._accounts.values(), key=_by_id))
        lines.extend(p.canonical() for p in sorted(self._positions.values(), key=_by_id))
        # keyed by the id's integer, whose order is the order of its fixed-width hex text
        orders = self._orders
        lines.extend(orders[key].canonical() for key in sorted(orders))
        return lines

    def state_hash(self) -> str:
        """sha256 hex of the canonical state: equal after replay, restore and on a standby."""
        return hashlib.sha256("\n".join(self.canonical_lines()).encode()).hexdigest()

    def validate_internal_state(self) -> None:
        """Check books, reservations and margins against the aggregates."""
        check_shard(self.instruments, self.books, self._orders.values(),
                    self._accounts.values(), self._positions.values(), self._leverage_in_use)


class _Settlement:
    """What one command's fills do to one account's position, fee and order margin."""

    __slots__ = ("account", "cost_ticklots", "fee_e8", "leverage", "position",
                 "realized_ticklots", "released", "size_lots", "trade_id")

    def __init__(self, account: Account, position: Position | None, leverage: int) -> None:
        self.account = account
        self.position = position
        self.leverage = leverage
        self.size_lots = position.size_lots if position is not None else 0
        self.cost_ticklots = position.cost_ticklots if position is not None else 0
        self.realized_ticklots = 0
        self.fee_e8 = 0
        self.released = Decimal(0)  # order margin given back (negative: newly reserved)
        self.trade_id = 0  # last trade of the command; 0: no fill

    def fill(self, trade_id: int, delta_lots: int, price_ticks: int, fee_e8: int) -> None:
        self.size_lots, self.cost_ticklots, realized = apply_trade(
            self.size_lots, self.cost_ticklots, delta_lots, price_ticks)
        self.realized_ticklots += realized
        self.fee_e8 += fee_e8
        self.trade_id = trade_id


_ORDER_PLACED, _ACCOUNT_OPENED, _POSITION_OPENED = "order placed", "account opened", "position"
_ORDER_EVENT, _ACCOUNT_EVENT, _POSITION_EVENT = "order", "account", "position event"
_FILLED = Order.Filled
_EVENT_KINDS: dict[type, str] = {}
"""How replay applies each event class, decided once per class."""


def _event_kind(event: Aggregate.Event) -> str:
    if isinstance(event, Order.Placed):
        return _ORDER_PLACED
    if isinstance(event, Account.Opened):
        return _ACCOUNT_OPENED
    if isinstance(event, Position.Opened):
        return _POSITION_OPENED
    if isinstance(event, Order.Event):
        return _ORDER_EVENT
    if isinstance(event, Account.Event):
        return _ACCOUNT_EVENT
    if isinstance(event, Position.Event):
        return _POSITION_EVENT
    raise TypeError(f"not an event of this shard's aggregates: {event!r}")


def _created(event: Aggregate.Event, kind: type[_A]) -> _A:
    aggregate = event.mutate(None)
    if not isinstance(aggregate, kind):
        raise TypeError(f"{event!r} did not create a {kind.__name__}")
    return aggregate


_by_priority = attrgetter("priority")


def _by_id(aggregate: Aggregate) -> str:
    return str(aggregate.id)
