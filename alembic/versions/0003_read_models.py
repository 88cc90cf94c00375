"""Read models of the projections (orders, trades, positions, balances) and their tracking rows.

Matches projections/read_models/models.py; a rebuild empties the rm_* views and resets rm_tracking.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_MONEY = sa.Numeric(38, 8)
_AMOUNT = sa.Numeric(38, 12)


def upgrade() -> None:
    op.create_table(
        "rm_orders",
        sa.Column("order_id", sa.Uuid(), primary_key=True),
        sa.Column("shard", sa.String(), nullable=False),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("client_order_id", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("order_type", sa.String(8), nullable=False),
        sa.Column("time_in_force", sa.String(3), nullable=False),
        sa.Column("post_only", sa.Boolean(), nullable=False),
        sa.Column("reduce_only", sa.Boolean(), nullable=False),
        sa.Column("leverage", sa.Integer(), nullable=False),
        sa.Column("price_ticks", sa.BigInteger(), nullable=True),
        sa.Column("quantity_lots", sa.BigInteger(), nullable=False),
        sa.Column("filled_lots", sa.BigInteger(), nullable=False),
        sa.Column("price", _AMOUNT, nullable=True),
        sa.Column("quantity", _AMOUNT, nullable=False),
        sa.Column("filled_quantity", _AMOUNT, nullable=False),
        sa.Column("reserved_margin", _MONEY, nullable=False),
        sa.Column("fees", _MONEY, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reject_reason", sa.String(32), nullable=True),
        sa.Column("placed_seq", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("rm_orders_account_status_idx", "rm_orders", ["shard", "account", "status"])
    op.create_index("rm_orders_client_order_idx", "rm_orders", ["account", "client_order_id"])

    op.create_table(
        "rm_trades",
        sa.Column("shard", sa.String(), primary_key=True),
        sa.Column("trade_id", sa.BigInteger(), primary_key=True),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("price_ticks", sa.BigInteger(), nullable=False),
        sa.Column("quantity_lots", sa.BigInteger(), nullable=False),
        sa.Column("price", _AMOUNT, nullable=False),
        sa.Column("quantity", _AMOUNT, nullable=False),
        sa.Column("taker_side", sa.String(4), nullable=False),
        sa.Column("maker_order_id", sa.Uuid(), nullable=False),
        sa.Column("taker_order_id", sa.Uuid(), nullable=False),
        sa.Column("maker_account", sa.String(), nullable=False),
        sa.Column("taker_account", sa.String(), nullable=False),
        sa.Column("maker_fee", _MONEY, nullable=False),
        sa.Column("taker_fee", _MONEY, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("rm_trades_maker_account_idx", "rm_trades", ["maker_account"])
    op.create_index("rm_trades_taker_account_idx", "rm_trades", ["taker_account"])

    op.create_table(
        "rm_positions",
        sa.Column("position_id", sa.Uuid(), primary_key=True),
        sa.Column("shard", sa.String(), nullable=False),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("leverage", sa.Integer(), nullable=False),
        sa.Column("size_lots", sa.BigInteger(), nullable=False),
        sa.Column("cost_ticklots", sa.BigInteger(), nullable=False),
        sa.Column("size", _AMOUNT, nullable=False),
        sa.Column("entry_cost", _MONEY, nullable=False),
        sa.Column("margin", _MONEY, nullable=False),
        sa.Column("realized_pnl", _MONEY, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "rm_positions_account_symbol_idx",
        "rm_positions",
        ["shard", "account", "symbol"],
        unique=True,
    )

    op.create_table(
        "rm_balances",
        sa.Column("account_id", sa.Uuid(), primary_key=True),
        sa.Column("shard", sa.String(), nullable=False),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("balance", _MONEY, nullable=False),
        sa.Column("order_margin", _MONEY, nullable=False),
        sa.Column("position_margin", _MONEY, nullable=False),
        sa.Column("available", _MONEY, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("rm_balances_account_idx", "rm_balances", ["shard", "account"], unique=True)

    op.create_table(
        "rm_tracking",
        sa.Column("projection", sa.String(), primary_key=True),
        sa.Column("shard", sa.String(), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("seq >= 0", name="rm_tracking_seq_check"),
    )


def downgrade() -> None:
    op.drop_table("rm_tracking")
    op.drop_table("rm_balances")
    op.drop_table("rm_positions")
    op.drop_table("rm_trades")
    op.drop_table("rm_orders")
