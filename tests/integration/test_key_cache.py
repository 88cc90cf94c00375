"""The API key cache against real PostgreSQL: stale entries answer while one lookup refreshes."""

from __future__ import annotations

import time

import psycopg

from infra.api.keys import ApiKey, KeyStore


def _wait(condition: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_expired_entry_answers_and_refreshes_once(dsn: str) -> None:
    store = KeyStore(dsn, cache_ttl_s=1.0)
    try:
        store.create_account("alice")
        token = store.create_key("alice").token
        key = store.verify(token)
        assert isinstance(key, ApiKey)
        time.sleep(0.6)  # past half the TTL, within it: served stale, refreshed behind
        lookups = []
        original = store.verify

        def counting(tok: str) -> ApiKey | None:
            lookups.append(tok)
            return original(tok)

        store.verify = counting  # type: ignore[method-assign]
        answers = [store.cached(token) for _ in range(50)]
        assert all(a == key for a in answers)
        _wait(lambda: lookups and not store._refreshing)
        assert len(lookups) == 1
        assert store.cached(token) == key  # fresh again
    finally:
        store.close()


def test_revocation_in_the_table_takes_effect_after_a_refresh(dsn: str) -> None:
    store = KeyStore(dsn, cache_ttl_s=1.0)
    try:
        store.create_account("bob")
        token = store.create_key("bob").token
        assert isinstance(store.verify(token), ApiKey)
        with psycopg.connect(dsn, autocommit=True) as conn:  # as another instance would
            conn.execute("UPDATE api_keys SET revoked_at = now()")
        time.sleep(0.6)
        store.cached(token)  # stale: still answers, starts the refresh
        _wait(lambda: not store._refreshing and store.cached(token) is None)
    finally:
        store.close()


def test_an_entry_stale_for_a_whole_ttl_is_looked_up_directly(dsn: str) -> None:
    store = KeyStore(dsn, cache_ttl_s=0.1)
    try:
        store.create_account("carol")
        token = store.create_key("carol").token
        store.verify(token)
        time.sleep(0.25)
        assert store.cached(token) is False
    finally:
        store.close()
