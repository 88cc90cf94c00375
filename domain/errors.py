"""Domain errors: one code per refusal so the API can map them without parsing messages."""

from __future__ import annotations


class DomainError(Exception):
    """A command refused by the domain; state is left exactly as it was."""

    code: str = "domain_error"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class UnknownSymbol(DomainError):
    """The shard does not trade this symbol."""

    code = "unknown_symbol"


class InvalidPrice(DomainError):
    """Price missing, non-positive or off the tick grid."""

    code = "invalid_price"


class InvalidQuantity(DomainError):
    """Quantity non-positive, off the lot grid or above the instrument maximum."""

    code = "invalid_quantity"


class InvalidOrder(DomainError):
    """A combination of flags that cannot be honoured (e.g. post-only market order)."""

    code = "invalid_order"


class InvalidLeverage(DomainError):
    """Leverage outside 1..max, or different from the one already in use on the symbol."""

    code = "invalid_leverage"


class InsufficientMargin(DomainError):
    """Available balance does not cover the initial margin plus the worst fee."""

    code = "insufficient_margin"


class InsufficientBalance(DomainError):
    """A withdrawal larger than the available balance."""

    code = "insufficient_balance"


class InvalidAmount(DomainError):
    """Money amount non-positive, non-finite or finer than 1e-8."""

    code = "invalid_amount"


class UnknownOrder(DomainError):
    """No open order with this id belongs to the account (to a lookup: no such order exists)."""

    code = "unknown_order"


class UnknownAccount(DomainError):
    """The account has never been opened on this shard."""

    code = "unknown_account"


class DuplicateClientOrderId(DomainError):
    """An open order already uses this client order id."""

    code = "duplicate_client_order_id"


class OrderNotOpen(DomainError):
    """The order is already filled, cancelled, rejected or expired."""

    code = "order_not_open"


class ReduceOnlyViolation(DomainError):
    """A reduce-only order that would open or grow a position."""

    code = "reduce_only_violation"


class InvariantViolation(AssertionError):
    """Internal state is inconsistent: a bug, never a client error."""
