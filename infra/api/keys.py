"""API keys: `<key_id>.<secret>`, shown once; the table keeps only sha256(secret).

A verified key is trusted for at most `cache_ttl_s` (default 5 s) without asking the table
again, so a revocation is answered with 401 within that time in every region, and the database
sees about two lookups per key per TTL, not one per request. Half-way through, the entry keeps
answering while one background lookup refreshes it (stale-while-revalidate): under load every
request of a busy key would otherwise queue behind its own lookup at once.

Key ids that have no valid row (unknown, malformed guesses, revoked) are remembered in a
bounded LRU (`max_unknown`), since anyone can make them up: trying random tokens costs a
lookup each (the per-address rate limit bounds that), never memory.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import psycopg

Role = Literal["trader", "operator"]

ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOKEN = re.compile(r"^(ak_[0-9a-f]{16})\.([A-Za-z0-9_-]{20,128})$")


CACHE_TTL_S = 5.0
MAX_UNKNOWN = 10_000


class KeyStoreError(Exception):
    """A refused account or key operation (bad name, unknown or existing account)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An authenticated caller: the account it acts for and what it may do."""

    key_id: str
    account: str
    role: Role
    funding: bool = False  # may credit and debit collateral (deposits, withdrawals)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key; `token` is the only copy of the secret."""

    key_id: str
    account: str
    role: Role
    token: str
    funding: bool = False


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """Accounts and API keys in PostgreSQL (tables from migrations 0002 and 0004)."""

    def __init__(
        self, dsn: str, *, cache_ttl_s: float = CACHE_TTL_S, max_unknown: int = MAX_UNKNOWN
    ) -> None:
        self.dsn = dsn
        self.cache_ttl_s = cache_ttl_s
        self._fresh_s = cache_ttl_s / 2  # then stale: answers while a refresh runs
        self.max_unknown = max_unknown
        self._cache: dict[str, tuple[float, str, ApiKey]] = {}  # valid keys: as many as rows
        self._unknown: OrderedDict[str, float] = OrderedDict()  # key id -> expiry, bounded
        self._unknown_lock = threading.Lock()
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._refreshing: set[str] = set()
        self._refresh_lock = threading.Lock()  # never held across a query: the loop takes it
        self._refresher: ThreadPoolExecutor | None = None

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
        return self._conn

    def _execute(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                cursor = self._connection().execute(sql, params)
            except psycopg.OperationalError:
                self.close_unlocked()
                cursor = self._connection().execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def close_unlocked(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        if self._refresher is not None:
            self._refresher.shutdown(wait=False, cancel_futures=True)
            self._refresher = None
        with self._lock:
            self.close_unlocked()

    # -- administration ---------------------------------------------------------------------

    def create_account(self, account: str) -> bool:
        """Register an account name; False if it already existed."""
        if not ACCOUNT_NAME.match(account):
            raise KeyStoreError(
                f"account name {account!r}: use 1-64 letters, digits, '.', '_' or '-'"
            )
        rows = self._execute(
            "INSERT INTO api_accounts (account) VALUES (%s) ON CONFLICT DO NOTHING "
            "RETURNING account",
            (account,),
        )
        return bool(rows)

    def account_exists(self, account: str) -> bool:
        return bool(self._execute("SELECT 1 FROM api_accounts WHERE account = %s", (account,)))

    def create_key(
        self, account: str, role: Role = "trader", *, funding: bool = False
    ) -> IssuedKey:
        """Issue a key for an existing account."""
        if not self.account_exists(account):
            raise KeyStoreError(f"no account {account!r}; create it with `accounts create`")
        key_id = "ak_" + secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        self._execute(
            "INSERT INTO api_keys (key_id, account, role, secret_hash, funding) "
            "VALUES (%s, %s, %s, %s, %s)",
            (key_id, account, role, secret_hash(secret), funding),
        )
        return IssuedKey(key_id, account, role, f"{key_id}.{secret}", funding)

    def revoke_key(self, key_id: str) -> bool | None:
        """Revoke a key: True if revoked now, False if it already was, None if unknown."""
        rows = self._execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s "
            "RETURNING revoked_at = now()",
            (key_id,),
        )
        self._cache.pop(key_id, None)
        return bool(rows[0][0]) if rows else None

    @property
    def unknown_cached(self) -> int:
        """Key ids remembered as having no valid row (at most `max_unknown`)."""
        return len(self._unknown)

    def _remember_unknown(self, key_id: str, expires: float) -> None:
        self._cache.pop(key_id, None)
        with self._unknown_lock:
            self._unknown[key_id] = expires
            self._unknown.move_to_end(key_id)
            while len(self._unknown) > self.max_unknown:
                self._unknown.popitem(last=False)

    def _known_unknown(self, key_id: str) -> bool | None:
        """True: remembered as unknown and fresh; None: remembered but expired; False: not."""
        with self._unknown_lock:
            expires = self._unknown.get(key_id)
            if expires is None:
                return False
            if expires < time.monotonic():
                del self._unknown[key_id]
                return None
            self._unknown.move_to_end(key_id)
            return True

    # -- authentication ---------------------------------------------------------------------

    def cached(self, token: str) -> ApiKey | bool | None:
        """The key from cache: ApiKey, None (known bad), or False (not cached: call verify)."""
        match = _TOKEN.match(token)
        if match is None:
            return None
        key_id, secret = match.groups()
        entry = self._cache.get(key_id)
        if entry is None:
            return None if self._known_unknown(key_id) else False
        now = time.monotonic()
        if entry[0] < now:
            if entry[0] + self._fresh_s < now:
                return False  # verified a whole TTL ago (no refresh landed): ask directly
            self._refresh(key_id, token)
        if not hmac.compare_digest(entry[1], secret_hash(secret)):
            return None
        return entry[2]

    def _refresh(self, key_id: str, token: str) -> None:
        """One background lookup per expired key, however many requests noticed it."""
        with self._refresh_lock:
            if key_id in self._refreshing:
                return
            self._refreshing.add(key_id)
            if self._refresher is None:
                self._refresher = ThreadPoolExecutor(1, thread_name_prefix="api-key-refresh")
            refresher = self._refresher

        def refresh() -> None:
            try:
                self.verify(token)
            except Exception:  # the entry stays stale; the next request after a TTL asks again
                pass
            finally:
                with self._refresh_lock:
                    self._refreshing.discard(key_id)

        try:
            refresher.submit(refresh)
        except RuntimeError:  # closed meanwhile: nothing left to refresh for
            with self._refresh_lock:
                self._refreshing.discard(key_id)

    def verify(self, token: str) -> ApiKey | None:
        """Check a token against the table (blocking) and refresh the cache."""
        match = _TOKEN.match(token)
        if match is None:
            return None
        key_id, secret = match.groups()
        rows = self._execute(
            "SELECT account, role, secret_hash, funding FROM api_keys "
            "WHERE key_id = %s AND revoked_at IS NULL",
            (key_id,),
        )
        now = time.monotonic()
        if not rows:
            self._remember_unknown(key_id, now + self.cache_ttl_s)
            return None
        account, role, stored = (str(v) for v in rows[0][:3])
        key = ApiKey(
            key_id, account, "operator" if role == "operator" else "trader", bool(rows[0][3])
        )
        self._cache[key_id] = (now + self._fresh_s, stored, key)
        if not hmac.compare_digest(stored, secret_hash(secret)):
            return None
        return key
