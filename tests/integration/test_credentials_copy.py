"""Keys copied between regions: a revocation is never undone by a later copy."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from infra.api.keys import ApiKey, KeyStore
from infra.bootstrap import copy_credentials, drop_database, migrate
from infra.settings import Settings
from tests.integration.conftest import scratch_dsn


@pytest.fixture
def two_regions() -> Iterator[Settings]:
    """Settings of region `primary` with a second region `standby`, each on its own database."""
    dsns = {r: scratch_dsn(f"cred_{r}") for r in ("primary", "standby")}
    for dsn in dsns.values():
        migrate(dsn)
    regions = ";".join(f"{r}={d}|http://127.0.0.1:1" for r, d in dsns.items())
    try:
        yield Settings.from_env({"EXDR_PG_DSN": dsns["primary"], "EXDR_REGIONS": regions})
    finally:
        for dsn in dsns.values():
            drop_database(dsn)


def _revoked_at(dsn: str, key_id: str) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT revoked_at FROM api_keys WHERE key_id = %s", (key_id,)
        ).fetchone()
    assert row is not None
    return row[0]


def test_a_later_copy_does_not_unrevoke_a_key(two_regions: Settings) -> None:
    primary = two_regions.pg_dsn
    standby = two_regions.region_named("standby").pg_dsn
    store = KeyStore(primary)
    try:
        store.create_account("alice")
        issued = store.create_key("alice")
    finally:
        store.close()
    assert all(p is None for p in copy_credentials(two_regions).values())
    # revoked where the operator happened to be (the standby region), not yet in the primary
    other = KeyStore(standby, cache_ttl_s=0)
    try:
        assert other.revoke_key(issued.key_id)
        assert other.verify(issued.token) is None
        # a key created later in the primary is copied over: the copy brings every key along
        assert all(p is None for p in copy_credentials(two_regions).values())
        assert _revoked_at(standby, issued.key_id) is not None, "the copy un-revoked the key"
        assert other.verify(issued.token) is None
    finally:
        other.close()


def test_a_revocation_in_the_source_reaches_the_copies(two_regions: Settings) -> None:
    standby = two_regions.region_named("standby").pg_dsn
    store = KeyStore(two_regions.pg_dsn)
    try:
        store.create_account("bob")
        issued = store.create_key("bob")
        copy_credentials(two_regions)
        other = KeyStore(standby)
        try:
            assert isinstance(other.verify(issued.token), ApiKey)
        finally:
            other.close()
        store.revoke_key(issued.key_id)
    finally:
        store.close()
    copy_credentials(two_regions)
    assert _revoked_at(standby, issued.key_id) is not None
