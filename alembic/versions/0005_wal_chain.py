"""Authenticated, chained WAL records: each names its predecessor's checksum and carries a MAC.

Records written before this revision have neither; `wal_chain_starts` records, per shard, the
seq (and checksum) of the last of them: the chain starts there, and an unchained record after
it is corrupt (application/wal/chain.py).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("wal_records", "wal_quarantine"):
        op.execute(f"ALTER TABLE {table} ADD COLUMN prev_checksum char(64), ADD COLUMN mac text")
    op.execute(
        """
        CREATE TABLE wal_chain_starts (
            shard_id text PRIMARY KEY,
            seq bigint NOT NULL CHECK (seq >= 0),
            checksum char(64),
            recorded_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        INSERT INTO wal_chain_starts (shard_id, seq, checksum)
        SELECT h.shard_id, h.seq, r.checksum
        FROM wal_heads h LEFT JOIN wal_records r ON r.shard_id = h.shard_id AND r.seq = h.seq
        WHERE h.seq > 0
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS wal_chain_starts")
    for table in ("wal_records", "wal_quarantine"):
        op.execute(
            f"ALTER TABLE {table} DROP COLUMN IF EXISTS prev_checksum, DROP COLUMN IF EXISTS mac"
        )
