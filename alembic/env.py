"""Alembic environment: runs migrations against EXDR_PG_DSN or `-x dsn=...`."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, pool

from alembic import context

config = context.config


def _url() -> str:
    dsn = context.get_x_argument(as_dictionary=True).get("dsn") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not dsn:
        dsn = os.environ.get("EXDR_PG_DSN", "postgresql://postgres@127.0.0.1:5432/exchange_dr")
    if dsn.startswith("postgresql://"):
        dsn = "postgresql+psycopg://" + dsn.removeprefix("postgresql://")
    return dsn


def run_migrations_offline() -> None:
    context.configure(url=_url(), literal_binds=True, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
