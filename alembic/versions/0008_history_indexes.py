"""Indexes for serving order and trade history from the read models.

`GET /v1/orders` lists an account's orders on a shard in placement order (optionally of one
status) and `GET /v1/trades` its fills in trade order, a page after a position: each needs an
index that ends with the order it walks, so a page costs its own size whatever the history.
They replace the indexes by (shard, account, status) and by account alone, which no query uses.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("rm_orders_account_placed_idx", "rm_orders", ["shard", "account", "placed_seq"])
    op.create_index(
        "rm_orders_account_status_placed_idx",
        "rm_orders",
        ["shard", "account", "status", "placed_seq"],
    )
    op.drop_index("rm_orders_account_status_idx", table_name="rm_orders")
    op.create_index(
        "rm_trades_maker_listing_idx", "rm_trades", ["shard", "maker_account", "trade_id"]
    )
    op.create_index(
        "rm_trades_taker_listing_idx", "rm_trades", ["shard", "taker_account", "trade_id"]
    )
    op.drop_index("rm_trades_maker_account_idx", table_name="rm_trades")
    op.drop_index("rm_trades_taker_account_idx", table_name="rm_trades")


def downgrade() -> None:
    op.create_index("rm_trades_taker_account_idx", "rm_trades", ["taker_account"])
    op.create_index("rm_trades_maker_account_idx", "rm_trades", ["maker_account"])
    op.drop_index("rm_trades_taker_listing_idx", table_name="rm_trades")
    op.drop_index("rm_trades_maker_listing_idx", table_name="rm_trades")
    op.create_index("rm_orders_account_status_idx", "rm_orders", ["shard", "account", "status"])
    op.drop_index("rm_orders_account_status_placed_idx", table_name="rm_orders")
    op.drop_index("rm_orders_account_placed_idx", table_name="rm_orders")
