"""The REST facade of a node, on its own thread and event loop (Faust owns the main thread)."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable
from typing import Any

import uvicorn

from infra.api import peer
from infra.api.app import create_app
from infra.bootstrap import make_history_reader, make_key_store
from infra.metrics.dr_metrics import NodeCollector
from infra.node.confirmations import accept_standby_ack
from infra.node.node import Node
from infra.node.reads import NodeReads
from infra.replication.peer_link import host_port
from infra.replication.peer_server import serve_peer_lane

log = logging.getLogger("exchange_dr.node")


def start_api(node: Node) -> threading.Thread:
    """Serve the REST facade on its own thread and event loop."""
    region = node.region
    assert node.coordinator is not None
    key_store = make_key_store(node.settings, dsn=region.pg_dsn)
    app = create_app(
        node.settings,
        node.writers,
        node,
        key_store,
        replica_lag_ms=node.replica_lag_ms,
        history=None
        if not region.promotable
        else make_history_reader(node.settings, dsn=region.pg_dsn),
        log_only=not region.promotable,
        reads=NodeReads(node.controllers),
    )
    app.state.facade.metrics.registry.register(NodeCollector(node))
    if node.settings.peer_token:
        lane = peer.PeerAckLane(
            node.settings.peer_token,
            functools.partial(accept_standby_ack, node, path="direct"),
            functools.partial(_take_records, node),
        )
        own_url = node.settings.security.peer_urls.get(region.name)
        if own_url is None:  # on the public port, in plain HTTP: development only
            log.warning("peer lane on the public API without TLS: set EXDR_PEER_URLS")
            app.peer_acks = lane
        else:
            serve_peer_lane(lane, own_url, node.settings.security.peer_tls)
    app.state.switchover = functools.partial(_switchover, node)
    node.api_app = app
    host, port = host_port(region.api_url)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=5,
        proxy_headers=False,  # no X-Forwarded-* is read: skip uvicorn's rewriting layer
    )
    server = uvicorn.Server(config)
    node.api_server = server
    thread = threading.Thread(target=server.run, name="rest-facade", daemon=True)
    thread.start()
    return thread


def _take_records(
    node: Node, shard_id: str, body: bytes
) -> Awaitable[dict[str, Any] | None] | None:
    """Called from the facade's loop: a pushed run to the shard's writer, stored there."""
    future = node.intakes[shard_id](body)  # KeyError: not a shard of ours
    return None if future is None else asyncio.wrap_future(future)


async def _switchover(node: Node, shard_id: str, to_region: str) -> dict[str, Any]:
    """Called from the facade's loop: run the handover on Faust's loop and wait for it."""
    controller = node.controllers.get(shard_id)
    if controller is None:
        raise ValueError(f"unknown shard {shard_id!r}")
    loop = node.faust_app.loop
    future = asyncio.run_coroutine_threadsafe(controller.hand_over(to_region), loop)
    return await asyncio.wrap_future(future)
