"""Alembic environment: runs migrations against EXDR_PG_DSN or `-x dsn=...`."""

from __future__ import annotations

from sqlalchemy import create_engine, pool

from alembic import context
from infra.settings import Settings
from projections.read_models.models import ReadModelBase

config = context.config

# The read models are declared once, as ORM classes; autogenerate compares them with the migrated
# schema (tests/integration/test_schema.py keeps that diff empty). The event store's tables belong
# to eventsourcing and our own SQL, so only tables of this metadata are compared.
target_metadata = ReadModelBase.metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    if type_ == "table":
        return name in target_metadata.tables
    return True


def _url() -> str:
    dsn = context.get_x_argument(as_dictionary=True).get("dsn") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not dsn:
        dsn = Settings.from_env().pg_dsn
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
        context.configure(
            connection=connection,
            transaction_per_migration=True,
            target_metadata=target_metadata,
            include_name=include_name,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
