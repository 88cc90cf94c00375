"""API keys may hold the `funding` right: deposits and withdrawals need it, trading does not.

A flag beside the role rather than a third role, because an operator may hold it too.
Existing keys get none: collateral is credited only through keys issued with `--funding`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE api_keys ADD COLUMN funding boolean NOT NULL DEFAULT false")


def downgrade() -> None:
    op.execute("ALTER TABLE api_keys DROP COLUMN IF EXISTS funding")
