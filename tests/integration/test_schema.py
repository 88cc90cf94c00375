"""The read models are declared once: the ORM classes and the migrations must agree."""

from __future__ import annotations

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, pool

from projections.read_models.models import ReadModelBase


def _engine_url(dsn: str) -> str:
    return "postgresql+psycopg://" + dsn.removeprefix("postgresql://")


def test_autogenerate_finds_nothing_to_change(dsn: str) -> None:
    engine = create_engine(_engine_url(dsn), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "include_name": lambda name, type_, parents: (
                        type_ != "table" or name in ReadModelBase.metadata.tables
                    ),
                    "compare_type": True,
                },
            )
            diff = compare_metadata(context, ReadModelBase.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"ORM read models and migrations disagree: {diff}"


def test_every_read_model_table_is_migrated(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    present = {name for (name,) in rows}
    assert set(ReadModelBase.metadata.tables) <= present
