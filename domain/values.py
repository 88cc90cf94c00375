"""Value types shared by the book and the aggregates: enums, instruments, exact money."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from domain.errors import InvalidAmount, InvalidPrice, InvalidQuantity

MONEY_PLACES = 8
"""Every money amount (balance, margin, fee, PnL) is an exact multiple of 1e-8."""

_MONEY_SCALE = 10**MONEY_PLACES
_BPS = 10_000
_ONE_E8 = Decimal("1e-8")


class Side(StrEnum):
    """Order side; the value is persisted, never rename."""

    BUY = "BUY"
    SELL = "SELL"

    @property
    def opposite(self) -> Side:
        """The side a taker of this side matches against."""
        return Side.SELL if self is Side.BUY else Side.BUY

    @property
    def sign(self) -> int:
        """+1 for a buy (position grows long), -1 for a sell."""
        return 1 if self is Side.BUY else -1


class OrderType(StrEnum):
    """How the order is priced; persisted."""

    LIMIT = "LIMIT"
    MARKET = "MARKET"


class TimeInForce(StrEnum):
    """What happens to the unfilled remainder; persisted."""

    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class OrderStatus(StrEnum):
    """Order life cycle; persisted."""

    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


CLOSED_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)


class RejectReason(StrEnum):
    """Why an accepted command ended an order without (full) execution; persisted."""

    POST_ONLY_WOULD_CROSS = "POST_ONLY_WOULD_CROSS"
    FOK_NOT_FILLABLE = "FOK_NOT_FILLABLE"
    NO_LIQUIDITY = "NO_LIQUIDITY"
    REDUCE_ONLY_WOULD_INCREASE = "REDUCE_ONLY_WOULD_INCREASE"
    SELF_TRADE = "SELF_TRADE"
    PRICE_BAND = "PRICE_BAND"
    IOC_REMAINDER = "IOC_REMAINDER"


class Liquidity(StrEnum):
    """Which side of a trade an order was on; decides the fee rate."""

    MAKER = "MAKER"
    TAKER = "TAKER"


def money(units: int) -> Decimal:
    """Turn an integer count of 1e-8 into a Decimal without rounding."""
    return Decimal(units) * _ONE_E8


def money_units(amount: Decimal) -> int:
    """Exact count of 1e-8 in an amount; refuses anything finer or non-finite."""
    if not amount.is_finite():
        raise InvalidAmount(f"amount {amount} is not a finite number", field="amount")
    scaled = amount.scaleb(MONEY_PLACES)
    if scaled != scaled.to_integral_value():
        raise InvalidAmount(f"amount {amount} is finer than 1e-8", field="amount")
    return int(scaled)


def ceil_div(numerator: int, denominator: int) -> int:
    """Integer division rounding up, so margin and fees never fall short."""
    return -(-numerator // denominator)


@dataclass(frozen=True)
class Instrument:
    """A perpetual contract: integer ticks and lots on a fixed grid, fees in basis points."""

    symbol: str
    tick_size: Decimal
    lot_size: Decimal
    max_leverage: int
    maker_fee_bps: int
    taker_fee_bps: int
    price_band_bps: int
    max_quantity_lots: int
    contract_e8: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Refuse grids whose one-tick-one-lot value is not a whole number of 1e-8."""
        if self.tick_size <= 0 or self.lot_size <= 0:
            raise ValueError(f"{self.symbol}: tick and lot sizes must be positive")
        unit = (self.tick_size * self.lot_size).scaleb(MONEY_PLACES)
        if unit != unit.to_integral_value():
            raise ValueError(f"{self.symbol}: tick_size*lot_size must be a multiple of 1e-8")
        object.__setattr__(self, "contract_e8", int(unit))

    def price_to_ticks(self, price: Decimal) -> int:
        """Exact tick count of a price, refusing off-grid or non-positive prices."""
        if not price.is_finite() or price <= 0:
            raise InvalidPrice(f"price {price} must be positive", field="price")
        ticks = price / self.tick_size
        if ticks != ticks.to_integral_value():
            raise InvalidPrice(
                f"price {price} is not a multiple of tick {self.tick_size}", field="price"
            )
        return int(ticks)

    def quantity_to_lots(self, quantity: Decimal) -> int:
        """Exact lot count of a quantity, refusing off-grid, non-positive or oversized ones."""
        if not quantity.is_finite() or quantity <= 0:
            raise InvalidQuantity(f"quantity {quantity} must be positive", field="quantity")
        lots = quantity / self.lot_size
        if lots != lots.to_integral_value():
            raise InvalidQuantity(
                f"quantity {quantity} is not a multiple of lot {self.lot_size}", field="quantity"
            )
        self.check_quantity_lots(int(lots))
        return int(lots)

    def check_quantity_lots(self, quantity_lots: int) -> None:
        """Refuse a lot count outside 1..max_quantity_lots."""
        if quantity_lots <= 0:
            raise InvalidQuantity("quantity must be positive", field="quantity_lots")
        if quantity_lots > self.max_quantity_lots:
            raise InvalidQuantity(
                f"quantity {quantity_lots} lots above maximum {self.max_quantity_lots}",
                field="quantity_lots",
            )

    def ticks_to_price(self, price_ticks: int) -> Decimal:
        """Price of a tick count."""
        return price_ticks * self.tick_size

    def lots_to_quantity(self, quantity_lots: int) -> Decimal:
        """Quantity of a lot count."""
        return quantity_lots * self.lot_size

    def notional(self, price_ticks: int, quantity_lots: int) -> Decimal:
        """Exact value of quantity_lots at price_ticks."""
        return money(price_ticks * quantity_lots * self.contract_e8)

    def margin_e8(self, cost_ticklots: int, leverage: int) -> int:
        """Initial margin in 1e-8 for an entry cost, rounded up."""
        return ceil_div(abs(cost_ticklots) * self.contract_e8, leverage)

    def fees_e8(self, ticklots: int) -> tuple[int, int]:
        """(maker fee, taker fee) in 1e-8 on a traded value: fee_e8 at both rates at once."""
        value = abs(ticklots) * self.contract_e8
        return -(-value * self.maker_fee_bps // _BPS), -(-value * self.taker_fee_bps // _BPS)

    def fee_e8(self, ticklots: int, fee_bps: int) -> int:
        """Fee in 1e-8 on a traded value, rounded up so the fee account never loses."""
        return ceil_div(abs(ticklots) * self.contract_e8 * fee_bps, _BPS)

    def band_price_ticks(self, side: Side, best_opposite_ticks: int) -> int:
        """Worst price a market order may trade at: best opposite price moved by the band."""
        move = best_opposite_ticks * self.price_band_bps // _BPS
        if side == Side.BUY:
            return best_opposite_ticks + move
        return max(1, best_opposite_ticks - move)

    def reserve_per_lot_e8(self, price_ticks: int, leverage: int,
                           reduce_only: bool = False) -> int:
        """Margin plus worst fee held per lot: linear, so partial fills release it exactly.

        A reduce-only order can only free margin, so it holds the fee alone.
        """
        value = price_ticks * self.contract_e8
        fee = -(-value * max(self.maker_fee_bps, self.taker_fee_bps) // _BPS)
        return fee if reduce_only else fee - (-value // leverage)


DEFAULT_INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("BTCUSDT", Decimal("0.1"), Decimal("0.001"), 100, 2, 5, 500, 1_000_000),
    Instrument("ETHUSDT", Decimal("0.01"), Decimal("0.01"), 100, 2, 5, 500, 1_000_000),
    Instrument("SOLUSDT", Decimal("0.001"), Decimal("0.1"), 50, 2, 6, 800, 1_000_000),
)
