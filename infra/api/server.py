"""`exchange-dr serve`: migrate, recover every shard, serve HTTP, drain the writers on exit."""

from __future__ import annotations

import logging

import uvicorn

from infra.api.app import create_app
from infra.bootstrap import (
    make_history_reader,
    make_key_store,
    make_leadership,
    migrate,
    start_shard_writers,
    stop_writers,
)
from infra.settings import Settings

log = logging.getLogger("exchange_dr.api")


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    access_log: bool = False,
) -> None:
    """Run until SIGINT/SIGTERM: uvicorn finishes in-flight requests, then writers drain."""
    migrate(settings.pg_dsn)
    writers = start_shard_writers(settings)
    key_store = make_key_store(settings)
    history = make_history_reader(settings)
    try:
        # commands are taken once the shards are recovered (a checkpoint and the tail) and the
        # history overlay holds what the read models do not (bounded by the projection's lag)
        app = create_app(settings, writers, make_leadership(settings), key_store, history=history)
        config = uvicorn.Config(
            app,
            host=host or settings.api_host,
            port=port or settings.api_port,
            loop="uvloop",
            http="httptools",
            access_log=access_log,
            log_level="info" if access_log else "warning",
            timeout_graceful_shutdown=10,
            proxy_headers=False,  # no X-Forwarded-* is read: skip uvicorn's rewriting layer
        )
        server = uvicorn.Server(config)
        log.info("serving shards %s on %s:%s", ", ".join(writers), config.host, config.port)
        server.run()
    finally:
        stop_writers(writers)
        history.close()
        key_store.close()
