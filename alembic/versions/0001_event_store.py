"""Event store, aggregate snapshots, WAL records, heads, checkpoints, relay positions and the
quarantine where a deposed primary sets aside what it wrote after the fork point.

The events and snapshots tables match what eventsourcing's PostgreSQL recorders expect for an
application named "Exchange" (tables exchange_events, exchange_snapshots; composite type
stored_event_uuid). wal_advance_head() is how the database, not luck, refuses a second writer
or an older epoch.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_AUTOVACUUM = """WITH (
    autovacuum_enabled = true,
    autovacuum_vacuum_threshold = 100000000,
    autovacuum_vacuum_scale_factor = 0.5,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01)"""


def upgrade() -> None:
    op.execute(
        "CREATE TYPE stored_event_uuid AS "
        "(originator_id uuid, originator_version bigint, topic text, state bytea)"
    )
    op.execute(
        f"""
        CREATE TABLE exchange_events (
            originator_id uuid NOT NULL,
            originator_version bigint NOT NULL,
            topic text,
            state bytea,
            notification_id bigserial,
            PRIMARY KEY (originator_id, originator_version)
        ) {_AUTOVACUUM}
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX exchange_events_notification_id_idx "
        "ON exchange_events (notification_id ASC)"
    )
    op.execute(
        f"""
        CREATE TABLE exchange_snapshots (
            originator_id uuid NOT NULL,
            originator_version bigint NOT NULL,
            topic text,
            state bytea,
            PRIMARY KEY (originator_id, originator_version)
        ) {_AUTOVACUUM}
        """
    )
    op.execute(
        """
        CREATE TABLE wal_heads (
            shard_id text PRIMARY KEY,
            seq bigint NOT NULL CHECK (seq >= 0),
            epoch bigint NOT NULL CHECK (epoch >= 0),
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE wal_records (
            shard_id text NOT NULL,
            seq bigint NOT NULL CHECK (seq > 0),
            epoch bigint NOT NULL,
            command_type text NOT NULL,
            command_key text,
            recorded_at_us bigint NOT NULL,
            payload bytea NOT NULL,
            checksum char(64) NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (shard_id, seq)
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX wal_records_command_key_idx ON wal_records (shard_id, command_key) "
        "WHERE command_key IS NOT NULL"
    )
    op.execute("CREATE INDEX wal_records_created_at_idx ON wal_records (created_at)")
    op.execute(
        """
        CREATE TABLE wal_quarantine (
            shard_id text NOT NULL,
            seq bigint NOT NULL,
            epoch bigint NOT NULL,
            command_type text NOT NULL,
            command_key text,
            recorded_at_us bigint NOT NULL,
            payload bytea NOT NULL,
            checksum char(64) NOT NULL,
            quarantined_at timestamptz NOT NULL DEFAULT now(),
            reason text NOT NULL,
            PRIMARY KEY (shard_id, seq, epoch, quarantined_at)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE relay_positions (
            shard_id text PRIMARY KEY,
            seq bigint NOT NULL CHECK (seq >= 0),
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE wal_checkpoints (
            shard_id text NOT NULL,
            seq bigint NOT NULL,
            epoch bigint NOT NULL,
            state bytea NOT NULL,
            state_hash char(64) NOT NULL,
            checksum char(64) NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (shard_id, seq)
        )
        """
    )
    op.execute(
        """
        CREATE FUNCTION wal_advance_head(p_shard text, p_prev bigint, p_last bigint, p_epoch bigint)
        RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            h wal_heads%ROWTYPE;
        BEGIN
            INSERT INTO wal_heads (shard_id, seq, epoch) VALUES (p_shard, 0, 0)
                ON CONFLICT (shard_id) DO NOTHING;
            SELECT * INTO h FROM wal_heads WHERE shard_id = p_shard FOR UPDATE;
            IF h.epoch > p_epoch THEN
                RAISE EXCEPTION 'WAL_FENCED: shard % is at epoch %, writer has epoch %',
                    p_shard, h.epoch, p_epoch;
            END IF;
            IF h.seq <> p_prev THEN
                RAISE EXCEPTION 'WAL_FENCED: shard % head is at seq %, writer expected %',
                    p_shard, h.seq, p_prev;
            END IF;
            IF p_last <= p_prev THEN
                RAISE EXCEPTION 'WAL_FENCED: shard % empty or backward append % -> %',
                    p_shard, p_prev, p_last;
            END IF;
            UPDATE wal_heads SET seq = p_last, epoch = p_epoch, updated_at = now()
                WHERE shard_id = p_shard;
        END;
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS wal_advance_head(text, bigint, bigint, bigint)")
    op.execute("DROP TABLE IF EXISTS wal_checkpoints")
    op.execute("DROP TABLE IF EXISTS relay_positions")
    op.execute("DROP TABLE IF EXISTS wal_quarantine")
    op.execute("DROP TABLE IF EXISTS wal_records")
    op.execute("DROP TABLE IF EXISTS wal_heads")
    op.execute("DROP TABLE IF EXISTS exchange_snapshots")
    op.execute("DROP TABLE IF EXISTS exchange_events")
    op.execute("DROP TYPE IF EXISTS stored_event_uuid")
