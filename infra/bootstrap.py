"""Composition root: settings in, wired shard applications and writers out."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
from alembic.config import Config as AlembicConfig
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from alembic import command as alembic_command
from application.ports import WalStore
from application.shard.app import ShardApp
from application.wal.writer import ShardWriter
from domain.values import DEFAULT_INSTRUMENTS, Instrument
from infra.api.history import HistoryReader
from infra.api.keys import KeyStore
from infra.api.leadership import StaticLeadership
from infra.checkpoints.checkpointer import ForkedCheckpointer
from infra.settings import REPO_ROOT, Settings
from infra.wal.archive import SegmentArchive
from infra.wal.retention_settings import ArchiveSettings
from projections.read_models.projector import ReadModelProjector


def eventsourcing_env(dsn: str, *, pool_size: int = 4) -> dict[str, str]:
    """eventsourcing's persistence settings for a PostgreSQL DSN, with our WAL recorder."""
    url = urlsplit(dsn)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "APPLICATION_RECORDER_TOPIC": "infra.wal.pg_wal:PostgresWalRecorder",
        "POSTGRES_DBNAME": (url.path or "/exchange_dr").lstrip("/"),
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": unquote(url.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_LOCK_TIMEOUT": "5",
        "CREATE_TABLE": "n",
    }


def instruments_for(symbols: tuple[str, ...]) -> tuple[Instrument, ...]:
    """The configured symbols' instrument definitions; an unknown symbol is a settings error."""
    by_symbol = {i.symbol: i for i in DEFAULT_INSTRUMENTS}
    missing = [s for s in symbols if s not in by_symbol]
    if missing:
        raise ValueError(f"EXDR_SHARDS: unknown symbol(s) {', '.join(missing)}")
    return tuple(by_symbol[s] for s in symbols)


def make_shard_app(
    settings: Settings,
    shard_id: str,
    *,
    dsn: str | None = None,
    epoch: int | None = None,
    log_only: bool = False,
) -> ShardApp:
    """A shard's application on `dsn`; `log_only` for a witness (WAL only, no hot state)."""
    shards = settings.shards()
    if shard_id not in shards:
        raise ValueError(f"unknown shard {shard_id!r}; configured: {', '.join(shards)}")
    app = ShardApp(
        shard_id,
        instruments_for(shards[shard_id]),
        env=eventsourcing_env(dsn or settings.pg_dsn),
        epoch=epoch,
        checkpoint_every=settings.checkpoint_every,
        snapshot_every=settings.snapshot_every,
    )
    app.log_only = log_only
    app.keys.filter_max_keys = settings.key_filter_max_keys
    app.replication_keys = settings.replication_keys()  # every record it writes is signed
    attach_archive(app.store, settings, dsn)
    return app


def attach_archive(store: object, settings: Settings, dsn: str | None = None) -> None:
    """Give a WAL recorder the region's archive, so reads reach archived records."""
    if hasattr(store, "archive"):
        store.archive = SegmentArchive(ArchiveSettings.from_env(settings, dsn).url)


def make_writer(settings: Settings, app: ShardApp) -> ShardWriter:
    """The shard's batched writer; checkpoints go to a forked child unless
    EXDR_CHECKPOINT_FORK=0 (infra/checkpoints/checkpointer.py)."""
    if settings.checkpoint_fork:
        app.background_checkpoint = ForkedCheckpointer()
    return ShardWriter(
        app, batch_max=settings.batch_max, batch_wait_s=settings.batch_wait_ms / 1000
    )


def alembic_config(dsn: str) -> AlembicConfig:
    config = AlembicConfig(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(Path(REPO_ROOT) / "alembic"))
    config.set_main_option("sqlalchemy.url", dsn.replace("%", "%%"))
    return config


def ensure_database(dsn: str) -> None:
    """Create the DSN's database if it does not exist (as the server's maintenance user)."""
    url = urlsplit(dsn)
    name = (url.path or "/").lstrip("/")
    admin = url._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def migrate(dsn: str, revision: str = "head") -> None:
    """Bring the schema to `revision` with Alembic (creating the database if needed)."""
    ensure_database(dsn)
    alembic_command.upgrade(alembic_config(dsn), revision)


def drop_database(dsn: str) -> None:
    url = urlsplit(dsn)
    name = (url.path or "/").lstrip("/")
    admin = url._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_shard_writers(settings: Settings, *, dsn: str | None = None) -> dict[str, ShardWriter]:
    """Recover every configured shard and start its writer (stop them with stop_writers)."""
    writers: dict[str, ShardWriter] = {}
    try:
        for shard_id in settings.shards():
            app = make_shard_app(settings, shard_id, dsn=dsn)
            app.recover()
            writers[shard_id] = make_writer(settings, app).start()
    except BaseException:
        stop_writers(writers)
        raise
    return writers


def stop_writers(writers: dict[str, ShardWriter]) -> None:
    """Drain and stop each writer, then close its application's connections."""
    for writer in writers.values():
        writer.stop()
        writer.app.close()


def make_key_store(settings: Settings, *, dsn: str | None = None) -> KeyStore:
    return KeyStore(
        dsn or settings.pg_dsn,
        cache_ttl_s=settings.security.key_cache_ttl_s,
        max_unknown=settings.security.key_cache_unknown_max,
    )


def make_leadership(settings: Settings) -> StaticLeadership:
    """`exchange-dr serve`'s configured leadership (a node takes it from ZooKeeper)."""
    return StaticLeadership.from_settings(settings)


# -- projections (read models) ---------------------------------------------------------------


def make_wal_reader(dsn: str) -> WalStore:
    """A WAL store for reading only (projections, tools): no shard application around it."""
    env = Environment(ShardApp.name, eventsourcing_env(dsn, pool_size=2))
    recorder = InfrastructureFactory.construct(env).application_recorder()
    if not isinstance(recorder, WalStore):
        raise TypeError(f"recorder {type(recorder).__name__} does not keep a WAL")
    attach_archive(recorder, Settings.from_env(), dsn)
    return recorder


def make_read_model_sessions(dsn: str) -> sessionmaker[Session]:
    """SQLAlchemy sessions on the region's database (psycopg 3 driver)."""
    url = dsn
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            url = "postgresql+psycopg://" + url.removeprefix(scheme)
    engine = create_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True)
    return sessionmaker(engine, expire_on_commit=False)


def make_history_reader(settings: Settings, *, dsn: str | None = None) -> HistoryReader:
    """Order and trade history from the read models of the region's database (the one its
    writers and projector use)."""
    return HistoryReader(
        make_read_model_sessions(dsn or settings.pg_dsn), all_instruments(settings)
    )


def all_instruments(settings: Settings) -> tuple[Instrument, ...]:
    """Instruments of every configured shard."""
    return tuple(i for symbols in settings.shards().values() for i in instruments_for(symbols))


def make_projector(settings: Settings, *, dsn: str | None = None) -> ReadModelProjector:
    """The read-model projector of a region: its views and its own WAL store."""
    region_dsn = dsn or settings.pg_dsn
    return ReadModelProjector(
        make_read_model_sessions(region_dsn), make_wal_reader(region_dsn), all_instruments(settings)
    )


def run_projections(
    settings: Settings, *, region: str | None = None, shards: Sequence[str] | None = None
) -> None:
    """Run the Faust projector worker for the configured shards until stopped (SIGTERM/INT).

    `region` names a configured region (EXDR_REGIONS): its database and its consumer group.
    """
    import asyncio

    import faust

    from projections.agents import ProjectorWorker, build_projector_app, ensure_wal_topics

    started = time.monotonic()
    chosen = tuple(shards or settings.shards())
    # a named region's views live in that region's database; otherwise EXDR_PG_DSN's
    dsn = settings.region_named(region).pg_dsn if region else settings.pg_dsn
    asyncio.run(ensure_wal_topics(settings, chosen))
    projector = make_projector(settings, dsn=dsn)
    alerts = fork_alerts(settings)
    projector.on_fork = alerts
    worker = ProjectorWorker(projector, chosen)
    app = build_projector_app(settings, worker, region=region or settings.region, started=started)
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


def fork_alerts(settings: Settings) -> Callable[[str, str], None]:
    """The critical alert a projector sends when its views stood on a forked record."""
    from infra.metrics.alerts import AlertSender

    sender = AlertSender(settings.alert_webhook)

    def alert(shard: str, message: str) -> None:
        sender.send("critical", "ReadModelsForked", message, {"shard": shard})

    return alert


def copy_credentials(settings: Settings) -> dict[str, str | None]:
    """Copy API accounts and keys (hashes only) from this region's store to every other
    configured region's; returns region -> None when copied, or the reason it was not."""
    results: dict[str, str | None] = {}
    with psycopg.connect(settings.pg_dsn, connect_timeout=5) as source:
        accounts = source.execute("SELECT account, created_at FROM api_accounts").fetchall()
        keys = source.execute(
            "SELECT key_id, account, role, secret_hash, created_at, revoked_at, funding "
            "FROM api_keys"
        ).fetchall()
    for region in settings.regions:
        if region.pg_dsn == settings.pg_dsn:
            continue
        try:
            with psycopg.connect(region.pg_dsn, connect_timeout=5) as target:
                target.cursor().executemany(
                    "INSERT INTO api_accounts (account, created_at) VALUES (%s, %s) "
                    "ON CONFLICT DO NOTHING",
                    accounts,
                )
                target.cursor().executemany(
                    "INSERT INTO api_keys (key_id, account, role, secret_hash, created_at, "
                    "revoked_at, funding) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (key_id) DO "
                    # a revocation is final: a copy may bring one, never take one away
                    "UPDATE SET revoked_at = COALESCE(api_keys.revoked_at, EXCLUDED.revoked_at)",
                    keys,
                )
            results[region.name] = None
        except psycopg.Error as exc:
            results[region.name] = str(exc).strip().splitlines()[0]
    return results


def revoke_everywhere(settings: Settings, key_id: str) -> dict[str, bool | str | None]:
    """Revoke a key in this region's store and every configured region's: region -> True
    (revoked now), False (already revoked), None (no such key there) or why it was not
    reached. A copy never brings a revoked key back (copy_credentials keeps revocations)."""
    stores = {region.name: region.pg_dsn for region in settings.regions}
    if settings.pg_dsn not in stores.values():
        stores = {"local": settings.pg_dsn, **stores}
    results: dict[str, bool | str | None] = {}
    for name, dsn in stores.items():
        store = KeyStore(dsn)
        try:
            results[name] = store.revoke_key(key_id)
        except psycopg.Error as exc:
            results[name] = str(exc).strip().splitlines()[0] or type(exc).__name__
        finally:
            store.close()
    return results
