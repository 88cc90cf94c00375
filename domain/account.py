"""Account aggregate: collateral and the margin held against orders and positions.

available = balance - order_margin - position_margin. The engine checks that a command keeps
it non-negative before triggering events; events carry amounts already computed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.base import ExchangeAggregate, uuid5_fast
from domain.errors import InsufficientBalance, InvalidAmount

_ACCOUNT_NAMESPACE = uuid5(NAMESPACE_URL, "exchange-dr:account")
_DEPOSIT_NAMESPACE = uuid5(NAMESPACE_URL, "exchange-dr:deposit")
FEE_OWNER = "__fees__"
"""Owner name of the per-shard account that collects every fee."""


class Account(ExchangeAggregate):
    """Collateral of one owner on one shard."""

    class Opened(Aggregate.Created):
        """First seen on this shard."""

        shard_id: str
        owner: str

    class Deposited(Aggregate.Event):
        """Collateral credited from outside the exchange."""

        amount: Decimal

        def apply(self, aggregate: Any) -> None:
            account: Account = aggregate
            account.balance += self.amount

    class Withdrawn(Aggregate.Event):
        """Collateral paid out."""

        amount: Decimal

        def apply(self, aggregate: Any) -> None:
            account: Account = aggregate
            account.balance -= self.amount

    class MarginChanged(Aggregate.Event):
        """New totals held against open orders and open positions."""

        order_margin: Decimal
        position_margin: Decimal

        def apply(self, aggregate: Any) -> None:
            account: Account = aggregate
            account.order_margin = self.order_margin
            account.position_margin = self.position_margin

    class FeeCharged(Aggregate.Event):
        """Trading fee paid to the shard's fee account. No longer recorded (Settled carries it):
        kept so that WALs written before Settled still replay."""

        amount: Decimal
        symbol: str

        def apply(self, aggregate: Any) -> None:
            account: Account = aggregate
            account.balance -= self.amount

    class FeeCollected(Aggregate.Event):
        """Fees of one command received by the shard's fee account (the other leg of the
        fees in Settled)."""

        amount: Decimal
        symbol: str

        def apply(self, aggregate: Any) -> None:
            account: Account = aggregate
            account.balance += self.amount

    class PnlRealized(Aggregate.Event):
        """Profit or loss of closing (part of) a position. No longer recorded (Settled carries
        it): kept so that WALs written before Settled still replay."""

        amount: Decimal
        symbol: str

        def apply(self, aggregate: Any) -> None:
            account: Account = aggregate
            account.balance += self.amount

    class Settled(Aggregate.Event):
        """Everything one command's trades did to the account: the new totals, plus the fees
        paid and the PnL realized in `symbol` on the way (balance = before - fee + pnl)."""

        symbol: str
        balance: Decimal
        order_margin: Decimal
        position_margin: Decimal
        fee: Decimal
        realized_pnl: Decimal

        def apply(self, aggregate: Any) -> None:
            account: Account = aggregate
            account.balance = self.balance
            account.order_margin = self.order_margin
            account.position_margin = self.position_margin

    def __init__(self, shard_id: str, owner: str) -> None:
        self.shard_id = shard_id
        self.owner = owner
        self.balance = Decimal(0)
        self.order_margin = Decimal(0)
        self.position_margin = Decimal(0)

    @staticmethod
    def create_id(shard_id: str, owner: str) -> UUID:
        """Deterministic id: an owner has one account per shard."""
        return uuid5_fast(_ACCOUNT_NAMESPACE, f"{shard_id}/{owner}")

    @staticmethod
    def deposit_key(account_id: UUID, deposit_id: str) -> UUID:
        """Deterministic id of a deposit: the same deposit id of an account is one deposit."""
        return uuid5_fast(_DEPOSIT_NAMESPACE, f"{account_id.hex}/{deposit_id}")

    @classmethod
    def fee_account_id(cls, shard_id: str) -> UUID:
        """Id of the shard's fee account."""
        return cls.create_id(shard_id, FEE_OWNER)

    @classmethod
    def open(cls, shard_id: str, owner: str) -> Account:
        """Open an account on first deposit (or the fee account on first fee)."""
        return cls._create(cls.Opened, id=cls.create_id(shard_id, owner), shard_id=shard_id,
                           owner=owner)

    @property
    def available(self) -> Decimal:
        """Collateral not held as margin: what new orders and withdrawals may use."""
        return self.balance - self.order_margin - self.position_margin

    @staticmethod
    def check_amount(amount: Decimal) -> None:
        """Refuse non-positive or non-finite money amounts."""
        if not amount.is_finite() or amount <= 0:
            raise InvalidAmount(f"amount {amount} must be positive", field="amount")

    def check_withdraw(self, amount: Decimal) -> None:
        """Refuse a withdrawal that would eat into margin."""
        self.check_amount(amount)
        if amount > self.available:
            raise InsufficientBalance(
                f"withdrawal {amount} exceeds available {self.available}", field="amount"
            )

    def deposit(self, amount: Decimal) -> None:
        """Credit collateral."""
        self.check_amount(amount)
        self._record(self.Deposited, amount=amount)

    def withdraw(self, amount: Decimal) -> None:
        """Debit collateral."""
        self.check_withdraw(amount)
        self._record(self.Withdrawn, amount=amount)

    def change_margin(self, order_margin: Decimal, position_margin: Decimal) -> None:
        """Record the new margin totals, if they changed."""
        if order_margin != self.order_margin or position_margin != self.position_margin:
            self._record(self.MarginChanged, order_margin=order_margin,
                               position_margin=position_margin)

    def settle(self, symbol: str, fee: Decimal, realized_pnl: Decimal, order_margin: Decimal,
               position_margin: Decimal) -> None:
        """Record one command's trades at once: fee and PnL booked, margins at new totals."""
        self._record(self.Settled, symbol=symbol, balance=self.balance - fee + realized_pnl,
                     order_margin=order_margin, position_margin=position_margin, fee=fee,
                     realized_pnl=realized_pnl)

    def collect_fee(self, amount: Decimal, symbol: str) -> None:
        """Credit fees to the fee account."""
        if amount:
            self._record(self.FeeCollected, amount=amount, symbol=symbol)

    def canonical(self) -> str:
        """Stable text of the account for state hashes."""
        return (
            f"account {self.id} {self.version} {self.owner} {self.balance.normalize()}"
            f" {self.order_margin.normalize()} {self.position_margin.normalize()}"
        )
