"""Real PostgreSQL for integration tests: a fresh migrated database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from infra.bootstrap import drop_database, migrate
from infra.settings import Settings


def scratch_dsn(label: str) -> str:
    base = Settings.from_env().pg_dsn
    url = urlsplit(base)
    return url._replace(path=f"/exdr_t_{label}_{os.getpid()}_{uuid.uuid4().hex[:8]}").geturl()


@pytest.fixture
def dsn() -> Iterator[str]:
    """A new database migrated to head, dropped afterwards."""
    url = scratch_dsn("db")
    migrate(url)
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env()
