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
from domain.values import Instrument, Liquidity, RejectReason, money, money_units

__all__ = ["CommandResult", "ShardEngine", "Trade"]

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
        self._orders: dict[UUID, Order] = {}
        self._leverage_in_use: dict[tuple[str, str], list[int]] = {}  # [leverage, open orders]
        self._next_priority = 1
        self._next_trade_id = 1
        self._touched: dict[UUID, Aggregate] = {}

    # ---- queries -------------------------------------------------------------------------

    def order(self, order_id: UUID) -> Order | None:
        """An open order."""
        return self._orders.get(order_id)

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
        self._touched = {}
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
        order = self._orders.get(command.order_id)
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
        account = self._existing_account(command.account)
        book = self.books[command.symbol]
        position = self._positions.get((command.account, command.symbol))
        plan = plan_placement(
            command, instrument, account, position, book, self._orders,
            self.leverage_in_use(command.account, command.symbol), self._positions,
        )
        return self._apply_placement(command, instrument, account, book, plan)

    def _apply_placement(self, command: PlaceOrder, instrument: Instrument, account: Account,
                         book: OrderBook, plan: Placement) -> CommandResult:
        order = Order.place(
            plan.order_id, account_id=account.id, owner=command.account,
            client_order_id=command.client_order_id, symbol=command.symbol,
            side=command.side, order_type=command.order_type,
            price_ticks=command.price_ticks, quantity_lots=command.quantity_lots,
            time_in_force=command.time_in_force, post_only=command.post_only,
            reduce_only=command.reduce_only, leverage=command.leverage,
            priority=self._next_priority, reserve_per_lot=money(plan.reserve_per_lot_e8),
        )
        self._next_priority += 1
        touched = self._touched
        touched[order.id] = order
        events_before = len(account.pending_events)
        if plan.reject_reason is not None:
            order.reject(plan.reject_reason)
            return CommandResult(touched=(order,), order=order)
        if not plan.fills and not plan.maker_expiries:
            return self._rest_or_expire(command, account, book, order, plan)

        symbol, side = command.symbol, command.side
        trades: list[Trade] = []
        fees_e8 = 0
        taker_fee_e8 = 0
        taker_realized = 0
        taker_position = self._positions.get((command.account, symbol))
        taker_margin_before = Decimal(0)
        taker_size = taker_cost = 0
        if taker_position is not None:
            taker_margin_before = taker_position.margin
            taker_size, taker_cost = taker_position.size_lots, taker_position.cost_ticklots
        taker_remaining = command.quantity_lots
        trade_id = 0
        maker_sign = -side.sign
        for entry, lots in plan.fills:
            trade_id = self._next_trade_id
            self._next_trade_id += 1
            price = entry.price_ticks
            ticklots = price * lots
            maker_fee = instrument.fee_e8(ticklots, instrument.maker_fee_bps)
            taker_fee = instrument.fee_e8(ticklots, instrument.taker_fee_bps)
            fees_e8 += maker_fee + taker_fee
            taker_fee_e8 += taker_fee
            maker = self._orders[entry.order_id]
            book.fill(entry.order_id, lots)
            maker.fill(trade_id, price, lots, money(maker_fee), Liquidity.MAKER, order.id,
                       maker.reserve_per_lot * (maker.remaining_lots - lots))
            touched[maker.id] = maker
            maker_account = self._accounts[entry.owner]
            realized, margin_before, margin_after = self._trade_position(
                maker_account, instrument, maker.leverage, maker_sign * lots, price, trade_id)
            maker_account.change_margin(
                maker_account.order_margin - maker.reserve_per_lot * lots,
                maker_account.position_margin - margin_before + margin_after,
            )
            maker_account.charge_fee(money(maker_fee), symbol)
            maker_account.realize_pnl(money(realized * instrument.contract_e8), symbol)
            touched[maker_account.id] = maker_account
            if not maker.is_open:
                self._forget_order(maker)
            taker_remaining -= lots
            order.fill(trade_id, price, lots, money(taker_fee), Liquidity.TAKER, maker.id,
                       order.reserve_per_lot * taker_remaining)
            taker_size, taker_cost, realized = apply_trade(taker_size, taker_cost,
                                                           side.sign * lots, price)
            taker_realized += realized
            trades.append(Trade(trade_id, symbol, price, lots, side, maker.id, order.id,
                                entry.owner, command.account, money(maker_fee),
                                money(taker_fee)))

        for entry in plan.maker_expiries:
            maker = self._orders[entry.order_id]
            book.cancel(entry.order_id)
            released = maker.reserved_margin
            maker.expire(RejectReason.REDUCE_ONLY_WOULD_INCREASE)
            touched[maker.id] = maker
            self._forget_order(maker)
            maker_account = self._accounts[entry.owner]
            maker_account.change_margin(maker_account.order_margin - released,
                                        maker_account.position_margin)
            touched[maker_account.id] = maker_account

        margin_after = taker_margin_before
        if plan.fills:
            # one Traded for the taker's whole sweep: its fills are already on the order
            if taker_position is None:
                taker_position = Position.open(account.id, account.owner, symbol,
                                               instrument.tick_size, command.leverage)
                self._register_position(taker_position)
            margin_after = money(instrument.margin_e8(taker_cost, command.leverage))
            taker_position.trade(trade_id, taker_size, taker_cost, command.leverage,
                                 margin_after, money(taker_realized * instrument.contract_e8))
            touched[taker_position.id] = taker_position
        rest_reserved = Decimal(0)
        if plan.rests:
            assert command.price_ticks is not None
            book.add(order.id, command.account, side, command.price_ticks, taker_remaining,
                     order.priority, command.reduce_only)
            self._remember_order(order)
            rest_reserved = order.reserved_margin
        elif order.is_open:
            order.expire(plan.expire_reason or RejectReason.IOC_REMAINDER)
        account.change_margin(
            account.order_margin + rest_reserved,
            account.position_margin - taker_margin_before + margin_after,
        )
        account.charge_fee(money(taker_fee_e8), symbol)
        account.realize_pnl(money(taker_realized * instrument.contract_e8), symbol)
        if len(account.pending_events) > events_before:
            touched[account.id] = account
        if fees_e8:
            fee_account = self._fee_account()
            fee_account.collect_fee(money(fees_e8), symbol)
            touched[fee_account.id] = fee_account
        return CommandResult(touched=tuple(touched.values()), order=order, account=account,
                             trades=tuple(trades))

    def _rest_or_expire(self, command: PlaceOrder, account: Account, book: OrderBook,
                        order: Order, plan: Placement) -> CommandResult:
        """Outcome of an order that meets nothing on arrival (most of the flow)."""
        if not plan.rests:
            order.expire(plan.expire_reason or RejectReason.IOC_REMAINDER)
            return CommandResult(touched=(order,), order=order)
        assert command.price_ticks is not None
        book.add(order.id, command.account, command.side, command.price_ticks,
                 command.quantity_lots, order.priority, command.reduce_only)
        self._remember_order(order)
        account.change_margin(account.order_margin + order.reserved_margin,
                              account.position_margin)
        return CommandResult(touched=(order, account), order=order, account=account)

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

    def _trade_position(self, account: Account, instrument: Instrument, leverage: int,
                        delta_lots: int, price_ticks: int,
                        trade_id: int) -> tuple[int, Decimal, Decimal]:
        """Apply one execution to a position: (realized tick-lots, margin before, after)."""
        key = (account.owner, instrument.symbol)
        position = self._positions.get(key)
        if position is None:
            position = Position.open(account.id, account.owner, instrument.symbol,
                                     instrument.tick_size, leverage)
            self._register_position(position)
        size, cost, realized = apply_trade(position.size_lots, position.cost_ticklots,
                                           delta_lots, price_ticks)
        before = position.margin
        after = money(instrument.margin_e8(cost, leverage))
        position.trade(trade_id, size, cost, leverage, after,
                       money(realized * instrument.contract_e8))
        self._touched[position.id] = position
        return realized, before, after

    def _remember_order(self, order: Order) -> None:
        self._orders[order.id] = order
        key = (order.owner, order.symbol)
        entry = self._leverage_in_use.get(key)
        if entry is None:
            self._leverage_in_use[key] = [order.leverage, 1]
        else:
            entry[1] += 1

    def _forget_order(self, order: Order) -> None:
        if self._orders.pop(order.id, None) is None:
            return
        key = (order.owner, order.symbol)
        entry = self._leverage_in_use[key]
        entry[1] -= 1
        if not entry[1]:
            del self._leverage_in_use[key]

    # ---- replay and checkpoints ----------------------------------------------------------

    def apply(self, event: Aggregate.Event) -> None:
        """Apply one recorded event (replay); books follow so FIFO order is reproduced."""
        if isinstance(event, Order.Placed):
            order = _created(event, Order)
            self._remember_order(order)
            if order.price_ticks is not None:
                self._book(order.symbol).add(order.id, order.owner, order.side,
                                             order.price_ticks, order.quantity_lots,
                                             order.priority, order.reduce_only)
            self._next_priority = max(self._next_priority, order.priority + 1)
        elif isinstance(event, Account.Opened):
            self._register_account(_created(event, Account))
        elif isinstance(event, Position.Opened):
            self._register_position(_created(event, Position))
        elif isinstance(event, Order.Event):
            self._apply_order_event(event)
        elif isinstance(event, Account.Event):
            event.mutate(self._accounts_by_id[event.originator_id])
        elif isinstance(event, Position.Event):
            event.mutate(self._positions_by_id[event.originator_id])
        else:
            raise TypeError(f"not an event of this shard's aggregates: {event!r}")

    def _apply_order_event(self, event: Order.Event) -> None:
        order = self._orders.get(event.originator_id)
        if order is None:
            raise InvariantViolation(f"event for an order that is not open: {event!r}")
        event.mutate(order)
        book = self._book(order.symbol)
        if isinstance(event, Order.Filled):
            self._next_trade_id = max(self._next_trade_id, event.trade_id + 1)
            if order.id in book:
                book.fill(order.id, event.quantity_lots)
        if not order.is_open:
            if order.id in book:
                book.cancel(order.id)
            self._forget_order(order)

    @classmethod
    def restore(cls, shard_id: str, instruments: Sequence[Instrument],
                aggregates: Iterable[Aggregate], counters: Mapping[str, int]) -> ShardEngine:
        """Rebuild from a checkpoint; books are refilled in (price, priority) order."""
        engine = cls(shard_id, instruments)
        orders: list[Order] = []
        for aggregate in aggregates:
            if isinstance(aggregate, Account):
                engine._register_account(aggregate)
            elif isinstance(aggregate, Position):
                engine._register_position(aggregate)
            elif isinstance(aggregate, Order):
                if aggregate.is_open:
                    orders.append(aggregate)
            else:
                raise TypeError(f"not an aggregate of this shard: {aggregate!r}")
        for order in sorted(orders, key=lambda o: (o.price_ticks or 0, o.priority)):
            engine._remember_order(order)
            if order.price_ticks is not None:
                engine._book(order.symbol).add(order.id, order.owner, order.side,
                                               order.price_ticks, order.remaining_lots,
                                               order.priority, order.reduce_only)
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
        lines.extend(o.canonical() for o in sorted(self._orders.values(), key=_by_id))
        return lines

    def state_hash(self) -> str:
        """sha256 hex of the canonical state: equal after replay, restore and on a standby."""
        return hashlib.sha256("\n".join(self.canonical_lines()).encode()).hexdigest()

    def validate_internal_state(self) -> None:
        """Check books, reservations and margins against the aggregates."""
        check_shard(self.instruments, self.books, self._orders.values(),
                    self._accounts.values(), self._positions.values(), self._leverage_in_use)


def _created(event: Aggregate.Created, kind: type[_A]) -> _A:
    aggregate = event.mutate(None)
    if not isinstance(aggregate, kind):
        raise TypeError(f"{event!r} did not create a {kind.__name__}")
    return aggregate


def _by_id(aggregate: Aggregate) -> str:
    return str(aggregate.id)
