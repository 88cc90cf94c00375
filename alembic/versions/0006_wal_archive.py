"""WAL archive: the manifest of segment files and the idempotency keys of archived records.

A segment holds a shard's records first_seq..last_seq, compressed, in a file of its own that is
never rewritten once its manifest row exists. `deleted` says the range has left wal_records.
`wal_archived_keys` keeps each archived record's idempotency key, so a retry finds its first
outcome whatever the live table still holds.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE wal_archive_segments (
            shard_id text NOT NULL,
            first_seq bigint NOT NULL CHECK (first_seq > 0),
            last_seq bigint NOT NULL,
            records bigint NOT NULL,
            file text NOT NULL,
            bytes bigint NOT NULL,
            checksum char(64) NOT NULL,
            first_checksum char(64) NOT NULL,
            last_checksum char(64) NOT NULL,
            deleted boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (shard_id, first_seq),
            UNIQUE (shard_id, last_seq),
            CHECK (last_seq >= first_seq AND records = last_seq - first_seq + 1)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE wal_archived_keys (
            shard_id text NOT NULL,
            command_key text NOT NULL,
            seq bigint NOT NULL,
            PRIMARY KEY (shard_id, command_key)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS wal_archived_keys")
    op.execute("DROP TABLE IF EXISTS wal_archive_segments")
