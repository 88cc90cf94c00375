"""The confirmed point of each shard, and the record the read models stand on.

`wal_confirmed` is what this region's node knows can no longer be taken back by a failover
(a majority of the replicas holds it): the shard's seq, and the epoch and checksum of the record
at that seq. It only moves forward. Projections (the node's own and `exchange-dr projections
run`) project up to it and no further, so a deposed leader's unconfirmed tail never reaches
the read models.

`rm_tracking` gains the epoch and checksum of the last record applied: a tracking row keyed on
seq alone cannot tell a record from the other fork's record at the same seq (both link to the
record before them), so the projector compares the checksum with its store's record instead.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "rm_tracking",
        sa.Column("epoch", sa.BigInteger(), nullable=False, server_default="0"),
    )
    # NULL: a row written before this revision; the projector adopts its store's checksum
    op.add_column("rm_tracking", sa.Column("checksum", sa.String(64), nullable=True))
    op.create_table(
        "wal_confirmed",
        sa.Column("shard", sa.String(), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.CheckConstraint("seq > 0", name="wal_confirmed_seq_check"),
    )


def downgrade() -> None:
    op.drop_table("wal_confirmed")
    op.drop_column("rm_tracking", "checksum")
    op.drop_column("rm_tracking", "epoch")
