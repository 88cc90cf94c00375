"""The WAL record of each stored event, so archiving a range also clears its events.

Every command's events are stored twice: in its WAL record's payload and, for eventsourcing's
repository (closed orders read back), as rows of exchange_events. The archiver moves the
records out of the live database; their event rows stayed, so the live database still grew
with all history. Each event row now names its record (shard_id, seq), filled on append, and
the archiver deletes the rows of an archived range (with the snapshots taken at those
versions) in the transaction that deletes the records. Rows written before this revision keep
NULL there: nothing names their record, and they stay.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE exchange_events ADD COLUMN shard_id text, ADD COLUMN seq bigint")
    op.execute(
        "CREATE INDEX exchange_events_record_idx ON exchange_events (shard_id, seq) "
        "WHERE seq IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS exchange_events_record_idx")
    op.execute(
        "ALTER TABLE exchange_events DROP COLUMN IF EXISTS seq, DROP COLUMN IF EXISTS shard_id"
    )
