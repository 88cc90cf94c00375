"""Authentication: `Authorization: Bearer <key>` or `X-API-Key: <key>`; roles trader/operator,
and the funding right (deposits, withdrawals) that either may hold."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from infra.api.errors import ApiError
from infra.api.facade import facade_of
from infra.api.keys import ApiKey, KeyStore

_bearer = HTTPBearer(auto_error=False, description="API key as `<key_id>.<secret>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def authenticated(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_header)],
) -> ApiKey:
    """The caller's key; 401 if missing, malformed, unknown or revoked."""
    token = bearer.credentials if bearer is not None else header_key
    if not token:
        raise ApiError(
            401, "unauthenticated", "an API key is required", headers={"WWW-Authenticate": "Bearer"}
        )
    return await key_of_token(facade_of(request.app.state).key_store, token)


async def key_of_token(store: KeyStore, token: str) -> ApiKey:
    """The key a token stands for, from cache or the table; 401 if it stands for none."""
    key = store.cached(token)
    if key is False:
        key = await run_in_threadpool(store.verify, token)
    if not isinstance(key, ApiKey):
        raise ApiError(
            401,
            "unauthenticated",
            "the API key is not valid",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return key


async def operator(key: Annotated[ApiKey, Depends(authenticated)]) -> ApiKey:
    """The caller's key if it is an operator key; 403 otherwise."""
    if key.role != "operator":
        raise ApiError(403, "forbidden", "this endpoint needs an operator key")
    return key


async def funding(key: Annotated[ApiKey, Depends(authenticated)]) -> ApiKey:
    """The caller's key if it may move collateral; 403 otherwise (trading keys may not)."""
    if not key.funding:
        raise ApiError(
            403,
            "funding_key_required",
            "deposits and withdrawals need a funding key "
            "(exchange-dr keys create --account ACCOUNT --funding); this key may only trade",
        )
    return key


Caller = Annotated[ApiKey, Depends(authenticated)]
Operator = Annotated[ApiKey, Depends(operator)]
Funding = Annotated[ApiKey, Depends(funding)]
