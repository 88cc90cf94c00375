"""The hot route, POST /v1/orders, without the framework's per-request machinery.

FastAPI resolves a dependency graph (two security schemes, the caller, the body), runs its own
middleware layers and builds a request object for every call: on this path that costs more CPU
than matching, committing and acknowledging the order together. This layer takes the orders
that are well-formed and authenticated by a known key and runs them through the very same
`routes.place`, with the same validation model and the same error rendering. Everything else
(a malformed or invalid body, a missing or unknown key, another content type) is handed to
the FastAPI route unchanged, body included, so there is one definition of every refusal and
the OpenAPI description stays the route's.
"""

from __future__ import annotations

import logging
import time

import orjson
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from domain.errors import DomainError
from infra.api import schemas as s
from infra.api.errors import (
    MAX_BODY_BYTES,
    ApiError,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    api_error_response,
    domain_error_response,
    error_response,
    send_json_body,
)
from infra.api.facade import Facade
from infra.api.keys import ApiKey
from infra.api.routes import place

PATH = "/v1/orders"

log = logging.getLogger("exchange_dr.api")


def token_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    """`Authorization: Bearer <key>`, else `X-API-Key`, as the route's security schemes."""
    bearer = api_key = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials:
                bearer = credentials
        elif name == b"x-api-key":
            api_key = value.decode("latin-1")
    return bearer or api_key or None


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


class OrderFastLane:
    """Takes POST /v1/orders in front of the framework's whole stack (ExchangeAPI calls it);
    does for its requests what the framework's layers would: the body limit, the request
    metrics, a 503 for an unexpected failure. `app` is the framework, for everything else."""

    def __init__(self, app: ASGIApp, facade: Facade) -> None:
        self.app = app
        self.facade = facade
        metrics = facade.metrics
        self._taken = metrics.fast_lane.labels("fast")
        self._passed = metrics.fast_lane.labels("framework")
        self._latency = metrics.latency.labels("POST", PATH)
        self._requests = metrics.requests

    @staticmethod
    def takes(scope: Scope) -> bool:
        return bool(scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        body = b""
        more = True
        while more and len(body) <= MAX_BODY_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its order
            body += message.get("body", b"")
            more = message.get("more_body", False)
        key = self._caller(headers)
        parsed: s.PlaceOrderIn | None = None
        if key is not None and not more and len(body) <= MAX_BODY_BYTES and _is_json(headers):
            try:
                parsed = s.PlaceOrderIn.model_validate_json(body)
            except ValidationError:
                parsed = None
        if key is None or parsed is None:
            # the framework's route answers (and its layers refuse an oversize body)
            self._passed.inc()
            await self.app(scope, _replay(body, more, receive), send)
            return
        self._taken.inc()
        response: JSONResponse | None = None
        try:
            status, view = await place(self.facade, key.account, parsed)
        except ApiError as exc:
            response = api_error_response(exc)
        except DomainError as exc:
            response = domain_error_response(exc)
        except Exception:
            log.exception("unhandled error on POST %s", PATH)
            response = error_response(
                503, "unavailable", "temporary failure; the request may be retried"
            )
        if response is None:
            # what JSONResponse sends, without its per-response object and encoder set-up
            await send_json_body(send, status, orjson.dumps(view))
        else:
            await response(scope, receive, send)
            status = response.status_code
        self._requests.labels("POST", PATH, str(status)).inc()
        self._latency.observe(time.perf_counter() - started)

    def _caller(self, headers: list[tuple[bytes, bytes]]) -> ApiKey | None:
        """The caller's key if the cache knows it as valid; None sends the request the slow
        way (which looks the key up, or refuses it with the usual 401)."""
        token = token_of(headers)
        if token is None:
            return None
        key = self.facade.key_store.cached(token)
        return key if isinstance(key, ApiKey) else None


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """A receive that hands the part of the body already read over once, then defers to the
    real one (for the rest of an oversize body, and for the disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replayed
