"""Wire types of the REST facade: requests validated by pydantic, responses documented.

Decimals travel as strings: the patterns keep them short enough that conversion to ticks,
lots and 1e-8 units stays exact (no rounding in Decimal's 28-digit context).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from domain.values import OrderType, Side, TimeInForce

PriceText = Annotated[str, Field(pattern=r"^[0-9]{1,12}(\.[0-9]{1,12})?$", examples=["50000.5"])]
AmountText = Annotated[
    str, Field(pattern=r"^[0-9]{1,15}(\.[0-9]{1,12})?$", examples=["10000.12345678"])
]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlaceOrderIn(_Strict):
    """A new order; a retry with the same client_order_id and body returns the first one."""

    symbol: Name
    side: Side
    type: OrderType = OrderType.LIMIT
    price: PriceText | None = None
    quantity: PriceText
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    reduce_only: bool = False
    leverage: int = Field(10, ge=1, le=1000)
    client_order_id: Name


class DepositIn(_Strict):
    """Credit collateral on the shard of `shard`, or of `symbol` (one of them is needed when
    more than one shard is served). With a `deposit_id` (the funding transfer's id) a retry
    credits nothing more and returns the first deposit's seq; the same id with another amount
    is refused. Only a funding key may deposit; it credits `account` (default: its own)."""

    amount: AmountText
    shard: Name | None = None
    symbol: Name | None = None
    deposit_id: Name | None = None
    account: Name | None = None


class Error(BaseModel):
    """Every error body: a stable code, a readable message, the offending field if any."""

    code: str
    message: str
    field: str | None = None
    leader: str | None = None


class OrderOut(BaseModel):
    """An order. In a command response `seq` is the WAL seq that committed the command; in a
    read it is the last seq that changed the order."""

    order_id: str
    shard: str
    account: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    price: str | None
    quantity: str
    filled_quantity: str
    status: str
    reject_reason: str | None
    time_in_force: TimeInForce
    post_only: bool
    reduce_only: bool
    leverage: int
    reserved_margin: str
    seq: int


class OrderPage(BaseModel):
    orders: list[OrderOut]
    next_cursor: str | None


class BalanceOut(BaseModel):
    shard: str
    balance: str
    order_margin: str
    position_margin: str
    reserved_margin: str
    available: str


class AccountOut(BaseModel):
    account: str
    balances: list[BalanceOut]


class DepositOut(BaseModel):
    account: str
    shard: str
    seq: int
    balance: BalanceOut


class PositionOut(BaseModel):
    shard: str
    symbol: str
    size: str
    entry_cost: str
    entry_price: str | None
    leverage: int
    margin: str
    realized_pnl: str


class PositionList(BaseModel):
    positions: list[PositionOut]


class BookLevel(BaseModel):
    price: str
    quantity: str
    orders: int


class BookOut(BaseModel):
    symbol: str
    shard: str
    seq: int
    bids: list[BookLevel]
    asks: list[BookLevel]


class TradeOut(BaseModel):
    trade_id: int
    shard: str
    symbol: str
    order_id: str
    side: Side
    price: str
    quantity: str
    fee: str
    liquidity: str
    seq: int


class TradePage(BaseModel):
    trades: list[TradeOut]
    next_cursor: str | None


class ShardStatus(BaseModel):
    shard: str
    symbols: list[str]
    leader: bool
    leader_url: str | None
    seq: int
    epoch: int
    commands: int
    state_hash: str | None = None


class ShardList(BaseModel):
    shards: list[ShardStatus]


class Health(BaseModel):
    status: str
    role: str
    shards: dict[str, bool] = Field(default_factory=dict)
    lag_ms: float | None = None


class SwitchoverIn(_Strict):
    """Hand shard `shard` over to region `to` (operators only)."""

    shard: Name
    to: Name


class SwitchoverOut(BaseModel):
    shard: str
    from_region: str
    to_region: str
    seq: int
    drained_in_s: float
