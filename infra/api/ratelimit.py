"""Rate limits of the public API: per API key and per client address, 429 with Retry-After.

Token buckets (rate per second, burst), kept in LRU maps of bounded size so that made-up keys
or spoofed addresses cost no memory beyond the bound. Only keys the cache knows as valid get a
bucket of their own (a guessed key id cannot spend its owner's budget); every request, valid
key or not, also spends its address's. Runs on the facade's event loop: no locks.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

import orjson

from infra.api.errors import Scope, Send, error_body
from infra.api.fastlane import token_of
from infra.api.keys import ApiKey, KeyStore

LIMITED_PREFIX = "/v1/"
MAX_BUCKETS = 10_000


class Buckets:
    """Token buckets by name; the least recently used are forgotten beyond `max_entries`
    (a forgotten bucket comes back full: the bound must stay above the active callers)."""

    def __init__(self, rate: float, burst: float, max_entries: int = MAX_BUCKETS) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_entries = max_entries
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, name: str, now: float) -> float:
        """Spend one token: 0.0 if there was one, else the seconds until there is."""
        entry = self._buckets.get(name)
        if entry is None:
            tokens = self.burst
            if len(self._buckets) >= self.max_entries:
                self._buckets.popitem(last=False)
        else:
            tokens = min(self.burst, entry[0] + (now - entry[1]) * self.rate)
            self._buckets.move_to_end(name)
        if tokens >= 1.0:
            self._buckets[name] = (tokens - 1.0, now)
            return 0.0
        self._buckets[name] = (tokens, now)
        return (1.0 - tokens) / self.rate


class RateLimiter:
    """Answers 429 for a request over its key's or its address's rate (ExchangeAPI calls
    `refused` first thing for every /v1/ request)."""

    def __init__(
        self,
        keys: KeyStore,
        per_key: Buckets | None,
        per_address: Buckets | None,
        counted: Callable[[str], None] = lambda limit: None,
    ) -> None:
        self.keys = keys
        self.per_key = per_key
        self.per_address = per_address
        self._counted = counted

    @classmethod
    def of(
        cls,
        keys: KeyStore,
        *,
        rate_per_key: float,
        burst_per_key: float,
        rate_per_address: float,
        burst_per_address: float,
        counted: Callable[[str], None] = lambda limit: None,
    ) -> RateLimiter | None:
        """None when both limits are off (rate 0)."""
        per_key = Buckets(rate_per_key, burst_per_key) if rate_per_key > 0 else None
        per_address = Buckets(rate_per_address, burst_per_address) if rate_per_address > 0 else None
        if per_key is None and per_address is None:
            return None
        return cls(keys, per_key, per_address, counted)

    def takes(self, scope: Scope) -> bool:
        return bool(scope["type"] == "http" and scope["path"].startswith(LIMITED_PREFIX))

    def wait_s(self, scope: Scope) -> tuple[str, float]:
        """('', 0.0) when the request may go on, else which limit and the seconds to wait."""
        now = time.monotonic()
        if self.per_address is not None:
            client = scope.get("client")
            wait = self.per_address.take(client[0] if client else "-", now)
            if wait > 0:
                return "address", wait
        if self.per_key is not None:
            token = token_of(scope["headers"])
            key = self.keys.cached(token) if token else None
            if isinstance(key, ApiKey):
                wait = self.per_key.take(key.key_id, now)
                if wait > 0:
                    return "key", wait
        return "", 0.0

    async def refused(self, scope: Scope, send: Send) -> bool:
        """True when it answered 429 (the request is done), False when it may go on."""
        limit, wait = self.wait_s(scope)
        if not limit:
            return False
        self._counted(limit)
        retry_after = max(1, math.ceil(wait))
        payload = orjson.dumps(
            error_body(
                "rate_limited",
                f"too many requests for this {'API key' if limit == 'key' else 'address'}; "
                f"retry after {retry_after} s",
            )
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"retry-after", str(retry_after).encode()),
        ]
        if _has_body(scope):
            headers.append((b"connection", b"close"))  # its body is not worth reading
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return True


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False
