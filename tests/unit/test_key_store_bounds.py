"""The key cache's memory of unknown key ids is an LRU of bounded size; the CLI has the
commands that issue funding keys and revoke keys."""

from __future__ import annotations

import secrets
import time

from infra.api.keys import KeyStore
from infra.cli.main import build_parser


def _token(key_id: str) -> str:
    return f"{key_id}.{secrets.token_urlsafe(32)}"


def test_unknown_key_ids_are_remembered_in_a_bounded_lru() -> None:
    store = KeyStore("postgresql://unused/none", max_unknown=100)  # no query is made here
    expires = time.monotonic() + 60
    ids = [f"ak_{n:016x}" for n in range(10_000)]
    for key_id in ids:
        store._remember_unknown(key_id, expires)
    assert store.unknown_cached == 100
    assert store.cached(_token(ids[-1])) is None  # known bad: no lookup needed
    assert store.cached(_token(ids[0])) is False  # forgotten: looked up again if tried
    store.cached(_token(ids[-100]))  # used: moves to the young end
    store._remember_unknown("ak_ffffffffffffffff", expires)
    assert store.cached(_token(ids[-100])) is None
    assert store.cached(_token(ids[-99])) is False  # the least recently used went


def test_an_expired_unknown_entry_is_looked_up_again() -> None:
    store = KeyStore("postgresql://unused/none")
    store._remember_unknown("ak_0123456789abcdef", time.monotonic() - 1)
    assert store.cached(_token("ak_0123456789abcdef")) is False
    assert store.unknown_cached == 0


def test_the_cli_issues_funding_keys_and_revokes() -> None:
    parser = build_parser()
    created = parser.parse_args(["keys", "create", "--account", "treasury", "--funding"])
    assert created.funding and not created.operator
    revoked = parser.parse_args(["keys", "revoke", "ak_0123456789abcdef", "--json"])
    assert revoked.key_id == "ak_0123456789abcdef" and revoked.json
    assert revoked.handler.__name__ == "cmd_keys_revoke"
