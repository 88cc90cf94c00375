"""Routes under /v1: thin translations between JSON and shard commands or writer queries."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from application.shard.app import Outcome, ShardApp, command_key
from application.views import (
    AccountView,
    FillView,
    OrderView,
    PositionView,
    book_json,
    same_order,
)
from domain.commands import CancelOrder, Deposit, PlaceOrder
from domain.errors import OrderNotOpen, UnknownOrder
from domain.values import OrderStatus
from infra.api import schemas as s
from infra.api.auth import Caller, Funding, Operator
from infra.api.errors import ApiError
from infra.api.facade import Facade, facade_of

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": s.Error, "description": text}
    for status, text in {
        400: "bad input: malformed JSON, wrong type, unknown symbol, price off tick, size off lot",
        401: "missing or invalid API key",
        403: "the key's role does not allow this (deposits need a funding key)",
        404: "no such order for this account",
        409: "client_order_id reused with a different body, or order no longer open",
        413: "request body above 64 KiB",
        422: "refused by risk: insufficient margin or balance, no account on the shard",
        429: "rate limit of the key or the address reached (see Retry-After)",
        503: "not leader (see `leader`, Retry-After), temporarily unavailable, or (a read, "
        "strict policy) `unconfirmed`: what it would show is not yet on a majority of the "
        "replicas: retry",
    }.items()
}

router = APIRouter(prefix="/v1", responses=_ERRORS)

_CURSOR = re.compile(r"^([0-9]{1,3})\.([0-9]{1,18})$")
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Cursor = Annotated[str | None, Query(max_length=32, description="next_cursor of the last page")]
SymbolFilter = Annotated[str | None, Query(max_length=64)]


def _facade(request: Request) -> Facade:
    return facade_of(request.app.state)


def _decimal(text: str, field: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ApiError(400, "invalid_request", f"{field} is not a decimal", field=field) from None


# -- orders -----------------------------------------------------------------------------------


@router.post(
    "/orders",
    status_code=201,
    response_model=s.OrderOut,
    responses={200: {"model": s.OrderOut, "description": "retry of an existing order"}},
)
async def place_order(body: s.PlaceOrderIn, request: Request, key: Caller) -> JSONResponse:
    """Place an order; the same client_order_id with the same body returns the first one."""
    status, view = await place(_facade(request), key.account, body)
    return JSONResponse(view, status_code=status)


async def place(facade: Facade, account: str, body: s.PlaceOrderIn) -> tuple[int, dict[str, Any]]:
    """The placement behind POST /v1/orders (also taken by infra/api/fastlane.py): the status
    (201 new, 200 retry) and the order's JSON; refusals raise ApiError or DomainError."""
    shard = facade.shard_of(body.symbol)
    instrument = facade.instruments[body.symbol]
    price_ticks = (
        None if body.price is None else instrument.price_to_ticks(_decimal(body.price, "price"))
    )
    command = PlaceOrder(
        account=account,
        client_order_id=body.client_order_id,
        symbol=body.symbol,
        side=body.side,
        order_type=body.type,
        quantity_lots=instrument.quantity_to_lots(_decimal(body.quantity, "quantity")),
        price_ticks=price_ticks,
        time_in_force=body.time_in_force,
        post_only=body.post_only,
        reduce_only=body.reduce_only,
        leverage=body.leverage,
    )
    facade.require_leader(shard)
    app = facade.writers[shard].app

    def present(outcome: Outcome) -> tuple[int, dict[str, Any] | None]:
        facade.activity[shard].record(outcome)  # read at once, before it is projected
        order = outcome.order
        if outcome.duplicate and order is None:
            order = app.find_order(_placed_order_id(command, app))
        if order is None:
            return 503, None
        view = OrderView.of(order, instrument, shard, outcome.seq).to_json()
        if not outcome.duplicate:
            return 201, view
        return (200, view) if same_order(order, command) else (409, None)

    status, view = await facade.submit(shard, command, present)
    if status == 409:
        raise ApiError(
            409,
            "client_order_id_conflict",
            f"client_order_id {body.client_order_id!r} was already used for a different order",
            field="client_order_id",
        )
    if view is None:
        raise ApiError(
            503,
            "unavailable",
            "the order was committed but cannot be read yet; retry with the same client_order_id",
            headers={"Retry-After": "1"},
        )
    return status, view


def _placed_order_id(command: PlaceOrder, app: ShardApp) -> UUID:
    """The deterministic id of the order a placement creates."""
    key = command_key(app.shard_id, command)
    assert key is not None
    return UUID(key)


OrderId = Annotated[UUID, Path(description="order id")]


async def _own_order(facade: Facade, order_id: UUID, account: str) -> OrderView:
    """The caller's order; another account's order is reported missing, not forbidden."""
    view = await facade.order_view(order_id)
    if view is not None and view.account == account:
        return view
    raise ApiError(404, "unknown_order", f"no order {order_id}", field="order_id")


@router.get("/orders/{order_id}", response_model=s.OrderOut)
async def get_order(order_id: OrderId, request: Request, key: Caller) -> JSONResponse:
    """One of the caller's orders, open or closed."""
    view = await _own_order(_facade(request), order_id, key.account)
    return JSONResponse(view.to_json())


@router.delete("/orders/{order_id}", response_model=s.OrderOut)
async def cancel_order(order_id: OrderId, request: Request, key: Caller) -> JSONResponse:
    """Cancel the open remainder of one of the caller's orders."""
    facade = _facade(request)
    # A non-leader may not know the order yet: send the client to the leader first.
    known = await facade.order_view(order_id)
    for shard in [known.shard] if known is not None else facade.shard_ids:
        facade.require_leader(shard)
    if known is None or known.account != key.account:
        raise ApiError(404, "unknown_order", f"no order {order_id}", field="order_id")
    view = known
    if not view.is_open:
        raise OrderNotOpen(f"order {order_id} is {view.status}", field="order_id")
    shard = view.shard
    instrument = facade.instruments[view.symbol]

    def present(outcome: Outcome) -> dict[str, Any]:
        facade.activity[shard].record(outcome)
        assert outcome.order is not None
        return OrderView.of(outcome.order, instrument, shard, outcome.seq).to_json()

    try:
        body = await facade.submit(shard, CancelOrder(key.account, order_id), present)
    except UnknownOrder:  # filled or cancelled between the check and the command
        raise OrderNotOpen(f"order {order_id} is no longer open", field="order_id") from None
    return JSONResponse(body)


def _page_cursor(facade: Facade, symbol: str | None, cursor: str | None) -> tuple[list[str], int]:
    """Shards to walk and the position in the first one."""
    shards = facade.shard_ids if symbol is None else [facade.shard_of(symbol)]
    if cursor is None:
        return shards, 0
    match = _CURSOR.match(cursor)
    if match is None or int(match.group(1)) >= len(facade.shard_ids):
        raise ApiError(
            400, "invalid_request", "cursor is not one this server returned", field="cursor"
        )
    first = facade.shard_ids[int(match.group(1))]
    if first not in shards:
        raise ApiError(400, "invalid_request", "cursor belongs to another symbol", field="cursor")
    return shards[shards.index(first) :], int(match.group(2))


PageRead = Callable[[str, int, int], Awaitable[tuple[Sequence[OrderView | FillView], int | None]]]
"""(shard, position to continue after, how many) -> the items and the position of the last one
if there are more."""


async def _paginate(
    facade: Facade, symbol: str | None, cursor: str | None, limit: int, read: PageRead
) -> tuple[list[dict[str, Any]], str | None]:
    shards, position = _page_cursor(facade, symbol, cursor)
    items: list[dict[str, Any]] = []
    for index, shard in enumerate(shards):
        found, next_position = await read(shard, position, limit - len(items))
        items.extend(item.to_json() for item in found)
        if next_position is not None:
            return items, f"{facade.shard_ids.index(shard)}.{next_position}"
        position = 0
        if len(items) >= limit and index + 1 < len(shards):
            return items, f"{facade.shard_ids.index(shards[index + 1])}.0"
    return items, None


@router.get("/orders", response_model=s.OrderPage)
async def list_orders(
    request: Request,
    key: Caller,
    symbol: SymbolFilter = None,
    status: Annotated[OrderStatus | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> JSONResponse:
    """The caller's orders in placement order, filtered by symbol and status, paginated; from
    the read models and the overlay of what they do not hold yet."""
    facade = _facade(request)
    wanted = None if status is None else str(status)

    async def read(
        shard: str, after: int, want: int
    ) -> tuple[Sequence[OrderView | FillView], int | None]:
        return await facade.order_page(
            shard, key.account, symbol=symbol, status=wanted, after=after, limit=want
        )

    items, next_cursor = await _paginate(facade, symbol, cursor, limit, read)
    return JSONResponse({"orders": items, "next_cursor": next_cursor})


@router.get("/trades", response_model=s.TradePage)
async def list_trades(
    request: Request,
    key: Caller,
    symbol: SymbolFilter = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> JSONResponse:
    """The caller's executions (maker and taker sides), in trade order, paginated."""
    facade = _facade(request)

    async def read(
        shard: str, after: int, want: int
    ) -> tuple[Sequence[OrderView | FillView], int | None]:
        return await facade.fill_page(shard, key.account, symbol=symbol, after=after, limit=want)

    items, next_cursor = await _paginate(facade, symbol, cursor, limit, read)
    return JSONResponse({"trades": items, "next_cursor": next_cursor})


# -- accounts -----------------------------------------------------------------------------------


@router.get("/accounts/me", response_model=s.AccountOut)
async def my_account(request: Request, key: Caller) -> JSONResponse:
    """Balances and reserved margin of the caller on every shard."""
    facade = _facade(request)
    balances = []
    for shard in facade.shard_ids:

        def read(app: ShardApp, sh: str = shard) -> AccountView:
            return _account_view(app, sh, key.account)

        view = await facade.query(shard, read)
        balances.append(view.to_json())
    return JSONResponse({"account": key.account, "balances": balances})


def _account_view(app: ShardApp, shard: str, owner: str) -> AccountView:
    account = app.engine.account(owner)
    return AccountView.empty(owner, shard) if account is None else AccountView.of(account, shard)


@router.get("/positions", response_model=s.PositionList)
async def my_positions(request: Request, key: Caller, symbol: SymbolFilter = None) -> JSONResponse:
    """The caller's positions (flat ones included once traded)."""
    facade = _facade(request)
    shards = facade.shard_ids if symbol is None else [facade.shard_of(symbol)]
    positions: list[dict[str, Any]] = []
    for shard in shards:

        def read(app: ShardApp, sh: str = shard) -> list[PositionView]:
            views = []
            for instrument in app.instruments:
                if symbol is not None and instrument.symbol != symbol:
                    continue
                position = app.engine.position(key.account, instrument.symbol)
                if position is not None:
                    views.append(PositionView.of(position, instrument, sh))
            return views

        positions.extend(v.to_json() for v in await facade.query(shard, read))
    return JSONResponse({"positions": positions})


@router.post(
    "/deposits",
    status_code=201,
    response_model=s.DepositOut,
    responses={200: {"model": s.DepositOut, "description": "retry of an existing deposit"}},
)
async def deposit(body: s.DepositIn, request: Request, key: Funding) -> JSONResponse:
    """Credit collateral to an account on one shard (opens it on first use): a funding key's
    own, or the one it names. The same deposit_id with the same amount returns the first
    deposit, credited once."""
    facade = _facade(request)
    account = key.account
    if body.account is not None and body.account != key.account:
        if not await run_in_threadpool(facade.key_store.account_exists, body.account):
            raise ApiError(422, "unknown_account", f"no account {body.account!r}", field="account")
        account = body.account
    if body.shard is not None:
        if body.shard not in facade.writers:
            raise ApiError(
                400, "unknown_shard", f"shard {body.shard!r} is not served here", field="shard"
            )
        shard = body.shard
    elif body.symbol is not None:
        shard = facade.shard_of(body.symbol)
    elif len(facade.shard_ids) == 1:
        shard = facade.shard_ids[0]
    else:
        raise ApiError(400, "invalid_request", "name the shard (or a symbol of it)", field="shard")
    amount = _decimal(body.amount, "amount")
    facade.require_leader(shard)

    def present(outcome: Outcome) -> tuple[int, dict[str, Any] | None]:
        if outcome.differs:
            return 409, None
        assert outcome.result is not None and outcome.result.account is not None
        view = AccountView.of(outcome.result.account, shard).to_json()
        return (200 if outcome.duplicate else 201), view | {"seq": outcome.seq}

    command = Deposit(account, amount, body.deposit_id)
    status, view = await facade.submit(shard, command, present)
    if view is None:
        raise ApiError(
            409,
            "deposit_id_conflict",
            f"deposit_id {body.deposit_id!r} was already used for a different amount",
            field="deposit_id",
        )
    seq = view.pop("seq")
    return JSONResponse(
        {"account": account, "shard": shard, "seq": seq, "balance": view}, status_code=status
    )


# -- market data and operators ------------------------------------------------------------------


@router.get("/book/{symbol}", response_model=s.BookOut)
async def order_book(
    request: Request,
    key: Caller,
    symbol: Annotated[str, Path(max_length=64)],
    depth: Annotated[int, Query(ge=1, le=500)] = 20,
) -> JSONResponse:
    """Aggregated price levels of a symbol, best first, with the seq they reflect."""
    facade = _facade(request)
    shard = facade.shard_of(symbol)
    instrument = facade.instruments[symbol]
    body = await facade.query(
        shard, lambda app: book_json(app.engine.depth(symbol, depth), instrument, shard, app.seq)
    )
    return JSONResponse(body)


@router.get("/shards", response_model=s.ShardList)
async def shards(
    request: Request, key: Operator, state_hash: Annotated[bool, Query()] = False
) -> JSONResponse:
    """Operators: each served shard, whether this instance leads it, and its WAL position;
    with ?state_hash=true also the hash of its hot state (costs a pass over the state)."""
    facade = _facade(request)
    rows = []
    for shard in facade.shard_ids:
        writer = facade.writers[shard]
        # an operator's view of this replica as it stands: labelled, never held back
        seq, epoch, digest = await facade.query(
            shard,
            lambda app: (app.seq, app.epoch, app.engine.state_hash() if state_hash else None),
            barrier=False,
        )
        rows.append(
            {
                "state_hash": digest,
                "shard": shard,
                "symbols": [i.symbol for i in writer.app.instruments],
                "leader": facade.leadership.is_leader(shard),
                "leader_url": facade.leadership.leader_url(shard),
                "seq": seq,
                "epoch": epoch,
                "commands": writer.commands,
            }
        )
    return JSONResponse({"shards": rows})


@router.post(
    "/admin/switchover", response_model=s.SwitchoverOut, responses={409: {"model": s.Error}}
)
async def switchover(request: Request, key: Operator, body: s.SwitchoverIn) -> JSONResponse:
    """Operators: drain the shard, wait until `to` holds every record, hand leadership over."""
    run = getattr(request.app.state, "switchover", None)
    if run is None:
        raise ApiError(
            409,
            "not_supported",
            "this process runs no failover manager (start it with `exchange-dr node`)",
        )
    try:
        result = await run(body.shard, body.to)
    except ValueError as exc:
        raise ApiError(409, "switchover_refused", str(exc)) from None
    except TimeoutError as exc:
        raise ApiError(409, "switchover_timeout", str(exc)) from None
    return JSONResponse(result)
