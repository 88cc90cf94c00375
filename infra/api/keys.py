"""API keys: `<key_id>.<secret>`, shown once; the table keeps only sha256(secret).

Verified keys are cached for `cache_ttl_s`, so a revocation takes effect within that time and
the database sees one lookup per key per TTL, not one per request. An entry that has just
expired keeps answering while one background lookup refreshes it (stale-while-revalidate):
under load every request of a busy key would otherwise queue behind its own lookup at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import psycopg

Role = Literal["trader", "operator"]

ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOKEN = re.compile(r"^(ak_[0-9a-f]{16})\.([A-Za-z0-9_-]{20,128})$")


class KeyStoreError(Exception):
    """A refused account or key operation (bad name, unknown or existing account)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An authenticated caller: the account it acts for and what it may do."""

    key_id: str
    account: str
    role: Role


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key; `token` is the only copy of the secret."""

    key_id: str
    account: str
    role: Role
    token: str


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """Accounts and API keys in PostgreSQL (tables from migration 0002)."""

    def __init__(self, dsn: str, *, cache_ttl_s: float = 5.0) -> None:
        self.dsn = dsn
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, str, ApiKey | None]] = {}
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

    def create_key(self, account: str, role: Role = "trader") -> IssuedKey:
        """Issue a key for an existing account."""
        if not self._execute("SELECT 1 FROM api_accounts WHERE account = %s", (account,)):
            raise KeyStoreError(f"no account {account!r}; create it with `accounts create`")
        key_id = "ak_" + secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        self._execute(
            "INSERT INTO api_keys (key_id, account, role, secret_hash) VALUES (%s, %s, %s, %s)",
            (key_id, account, role, secret_hash(secret)),
        )
        return IssuedKey(key_id, account, role, f"{key_id}.{secret}")

    def revoke_key(self, key_id: str) -> bool:
        rows = self._execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL "
            "RETURNING key_id",
            (key_id,),
        )
        self._cache.pop(key_id, None)
        return bool(rows)

    # -- authentication ---------------------------------------------------------------------

    def cached(self, token: str) -> ApiKey | bool | None:
        """The key from cache: ApiKey, None (known bad), or False (not cached: call verify)."""
        match = _TOKEN.match(token)
        if match is None:
            return None
        key_id, secret = match.groups()
        entry = self._cache.get(key_id)
        if entry is None:
            return False
        now = time.monotonic()
        if entry[0] < now:
            if entry[0] + self.cache_ttl_s < now:
                return False  # no refresh landed for a whole TTL (store away?): ask it directly
            self._refresh(key_id, token)
        if entry[2] is None or not hmac.compare_digest(entry[1], secret_hash(secret)):
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
            "SELECT account, role, secret_hash FROM api_keys "
            "WHERE key_id = %s AND revoked_at IS NULL",
            (key_id,),
        )
        expires = time.monotonic() + self.cache_ttl_s
        if not rows:
            self._cache[key_id] = (expires, "", None)
            return None
        account, role, stored = (str(v) for v in rows[0])
        key = ApiKey(key_id, account, "operator" if role == "operator" else "trader")
        self._cache[key_id] = (expires, stored, key)
        if not hmac.compare_digest(stored, secret_hash(secret)):
            return None
        return key
