"""Accounts known to the REST facade and their API keys (secrets stored as sha256 only).

An account name is the `owner` of the domain's per-shard Account aggregates; the aggregate is
opened by the first deposit, this row only says the name exists and may hold keys.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE api_accounts (
            account text PRIMARY KEY CHECK (account ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE api_keys (
            key_id text PRIMARY KEY,
            account text NOT NULL REFERENCES api_accounts (account),
            role text NOT NULL CHECK (role IN ('trader', 'operator')),
            secret_hash char(64) NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz
        )
        """
    )
    op.execute("CREATE INDEX api_keys_account_idx ON api_keys (account)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS api_keys")
    op.execute("DROP TABLE IF EXISTS api_accounts")
