"""One error layer: every refusal becomes a JSON `{code, message, field?}` with a 4xx status.

Domain errors map by code. Infrastructure failures (a batch that could not commit, a stopped
writer, a timeout) are retryable and answer 503 `unavailable`; anything unexpected is logged
and answers 503 too, never a 500 or a traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.errors import DomainError

log = logging.getLogger("exchange_dr.api")

MAX_BODY_BYTES = 64 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DOMAIN_STATUS: dict[str, int] = {
    "unknown_symbol": 400,
    "invalid_price": 400,
    "invalid_quantity": 400,
    "invalid_order": 400,
    "invalid_leverage": 400,
    "invalid_amount": 400,
    "insufficient_margin": 422,
    "insufficient_balance": 422,
    "reduce_only_violation": 422,
    "unknown_account": 422,
    "unknown_order": 404,
    "order_not_open": 409,
    "duplicate_client_order_id": 409,
}

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
_FIELD_NAMES = {"price_ticks": "price", "quantity_lots": "quantity"}


class ApiError(Exception):
    """A refusal decided by the facade itself."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        leader: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.leader = leader
        self.headers = headers


def error_body(
    code: str, message: str, field: str | None = None, leader: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    if leader is not None:
        body["leader"] = leader
    return body


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    leader: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(code, message, field, leader), status_code=status, headers=headers
    )


def api_error_response(exc: ApiError) -> JSONResponse:
    return error_response(
        exc.status,
        exc.code,
        exc.message,
        field=exc.field,
        leader=exc.leader,
        headers=exc.headers,
    )


def domain_error_response(exc: DomainError) -> JSONResponse:
    field = _FIELD_NAMES.get(exc.field or "", exc.field)
    return error_response(DOMAIN_STATUS.get(exc.code, 400), exc.code, exc.message, field=field)


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return error_response(400, "malformed_json", "request body is not valid JSON")
    loc = [
        str(part)
        for part in first.get("loc", ())
        if part not in ("body", "query", "path", "header")
    ]
    field = ".".join(loc) or None
    message = str(first.get("msg", "invalid request"))
    if first.get("type") == "missing" and not loc:
        message = "request body is required"
    return error_response(400, "invalid_request", message, field=field)


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return api_error_response(exc)

    async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        return domain_error_response(exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _validation_response(exc)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(
            exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})
        )

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(DomainError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


class GuardMiddleware:
    """Outermost layer: bodies over MAX_BODY_BYTES get 413, unexpected exceptions get 503."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit() or int(value) > MAX_BODY_BYTES:
                    await _send_json(
                        send,
                        413,
                        error_body(
                            "payload_too_large", f"request body above {MAX_BODY_BYTES} bytes"
                        ),
                    )
                    return
                break
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _send_json(
                    send,
                    413,
                    error_body("payload_too_large", f"request body above {MAX_BODY_BYTES} bytes"),
                )
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _send_json(
                    send,
                    503,
                    error_body("unavailable", "temporary failure; the request may be retried"),
                )


class _BodyTooLarge(StarletteHTTPException):
    """Raised while reading a chunked body; FastAPI passes HTTP exceptions through."""

    def __init__(self) -> None:
        super().__init__(413, f"request body above {MAX_BODY_BYTES} bytes")


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    await send_json_body(send, status, json.dumps(body).encode())


async def send_json_body(send: Send, status: int, payload: bytes) -> None:
    """An already encoded JSON response, straight through ASGI (the layers below FastAPI)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
