"""Instrument grids and money conversions are exact and refuse anything off-grid."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.errors import DomainError, InvalidAmount, InvalidPrice, InvalidQuantity
from domain.values import DEFAULT_INSTRUMENTS, Instrument, Side, money, money_units

BTC = DEFAULT_INSTRUMENTS[0]


def test_price_and_quantity_round_trip_exactly() -> None:
    assert BTC.price_to_ticks(Decimal("50000.1")) == 500001
    assert BTC.ticks_to_price(500001) == Decimal("50000.1")
    assert BTC.quantity_to_lots(Decimal("0.005")) == 5
    assert BTC.lots_to_quantity(5) == Decimal("0.005")
    assert BTC.notional(500001, 5) == Decimal("250.0005")


@pytest.mark.parametrize("price", ["50000.15", "0", "-1", "NaN"])
def test_off_tick_or_non_positive_prices_are_refused(price: str) -> None:
    with pytest.raises(InvalidPrice) as caught:
        BTC.price_to_ticks(Decimal(price))
    assert caught.value.code == "invalid_price"
    assert caught.value.field == "price"


@pytest.mark.parametrize("quantity", ["0.0015", "0", "-0.001", "1000000"])
def test_off_lot_non_positive_or_oversized_quantities_are_refused(quantity: str) -> None:
    with pytest.raises(InvalidQuantity):
        BTC.quantity_to_lots(Decimal(quantity))


def test_money_is_whole_units_of_1e_8() -> None:
    assert money(123) == Decimal("0.00000123")
    assert money_units(Decimal("1.5")) == 150_000_000
    with pytest.raises(InvalidAmount):
        money_units(Decimal("0.000000001"))
    with pytest.raises(InvalidAmount):
        money_units(Decimal("Infinity"))


def test_margin_and_fees_round_up() -> None:
    # 1 tick-lot of BTC is 0.0001 = 10_000e-8; a third of it is not whole.
    assert BTC.margin_e8(1, 3) == 3334
    assert BTC.fee_e8(1, 5) == 5  # 0.0001 * 5bps = 5e-8 exactly
    assert BTC.fee_e8(3, 1) == 3
    assert BTC.fee_e8(1, 1) == 1


def test_price_band_moves_against_the_taker() -> None:
    assert BTC.band_price_ticks(Side.BUY, 100_000) == 105_000
    assert BTC.band_price_ticks(Side.SELL, 100_000) == 95_000


def test_grids_finer_than_money_are_refused() -> None:
    with pytest.raises(ValueError):
        Instrument("X", Decimal("0.0001"), Decimal("0.00001"), 10, 1, 1, 100, 10)


def test_every_error_has_a_snake_case_code() -> None:
    def subclasses(cls: type[DomainError]) -> list[type[DomainError]]:
        return [c for s in cls.__subclasses__() for c in (s, *subclasses(s))]

    codes = [cls.code for cls in subclasses(DomainError)]
    assert len(codes) >= 12
    assert len(set(codes)) == len(codes)
    assert all(code.islower() and " " not in code for code in codes)
