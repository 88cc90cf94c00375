"""The replication key settings: a current key with its id, older keys accepted in a rotation."""

from __future__ import annotations

import pytest

from application.wal.auth import DEVELOPMENT_KEY_ID, RejectedError
from infra.settings import Settings


def test_the_current_key_signs_and_older_accepted_keys_verify() -> None:
    old = Settings.from_env(
        {"EXDR_REPLICATION_KEY": "the-first-key-of-all", "EXDR_REPLICATION_KEY_ID": "k1"}
    )
    new = Settings.from_env(
        {
            "EXDR_REPLICATION_KEY": "the-second-key-of-all",
            "EXDR_REPLICATION_KEY_ID": "k2",
            "EXDR_REPLICATION_KEYS_ACCEPTED": "k1=the-first-key-of-all",
        }
    )
    tag = old.replication_keys().sign_record("a" * 64)
    assert tag.startswith("k1:")
    new.replication_keys().verify_record("a" * 64, tag)  # accepted during the rotation
    assert new.replication_keys().sign_record("a" * 64).startswith("k2:")
    with pytest.raises(RejectedError):
        old.replication_keys().verify_record("a" * 64, new.replication_keys().sign_record("a" * 64))
    assert "the-second-key" not in repr(new)


def test_without_a_key_the_development_key_is_used() -> None:
    assert Settings.from_env({}).replication_keys().current_id == DEVELOPMENT_KEY_ID


@pytest.mark.parametrize(
    "env",
    [
        {"EXDR_REPLICATION_KEY": "short"},
        {"EXDR_REPLICATION_KEY": "long-enough-key-here", "EXDR_REPLICATION_KEY_ID": "a:b"},
        {"EXDR_REPLICATION_KEYS_ACCEPTED": "k0"},
        {"EXDR_REPLICATION_KEYS_ACCEPTED": "k0=short"},
    ],
)
def test_bad_key_settings_name_their_variable(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="EXDR_REPLICATION_KEY"):
        Settings.from_env(env)
