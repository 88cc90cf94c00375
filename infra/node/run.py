"""run_node: build a region's node, serve its facade, run the Faust worker on the main thread
(signals, stop), and on the way out hand over what it leads and stop every writer."""

from __future__ import annotations

import logging
from typing import Any

import faust

from infra.failover.state import Role
from infra.node.api_thread import start_api
from infra.node.heap import HeapPolicy
from infra.node.node import Node
from infra.node.wiring import build_node
from infra.settings import Settings
from infra.wal.archive_service import start_archiving

log = logging.getLogger("exchange_dr.node")


def run_node(settings: Settings, region_name: str, *, loglevel: str = "warn") -> int:
    # SIGUSR1: the Faust worker (mode) writes every thread's stack and every task to stderr
    logging.getLogger("httpx").setLevel(logging.WARNING)
    heap = HeapPolicy()
    if settings.gc_tuned:
        heap.install()
    node = build_node(settings, region_name)
    node.archiving = start_archiving(node)
    if node.projection is not None:
        node.projection.start()

    @node.faust_app.timer(1.0)  # type: ignore[untyped-decorator]
    async def settle_heap() -> None:
        heap.settle()

    api_thread = start_api(node)

    @node.faust_app.on_before_shutdown.connect  # type: ignore[arg-type]
    def _stop(app: Any, **_: Any) -> None:
        shut_down(node)

    log.info(
        "node region=%s shards=%s api=%s",
        node.region.name,
        ",".join(node.controllers),
        node.region.api_url,
    )
    worker = faust.Worker(node.faust_app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    finally:
        if node.api_server is not None:
            node.api_server.should_exit = True
        api_thread.join(5)
    return 0


def shut_down(node: Node) -> None:
    """Hand over what this region leads (at once, rather than at its session's expiry), stop
    the facade and every writer; commands still waiting are failed, never acknowledged."""
    coord = node.coordinator
    for controller in node.controllers.values():
        controller.stop_relay()
        if controller.role is Role.LEADER and coord is not None:
            # a graceful stop hands the shard over at once instead of waiting for expiry
            peers = node.settings.peers(node.region.name)
            if peers:
                coord.request_handover(controller.shard_id, peers[0].name)
            coord.resign(controller.shard_id)
            node.alerts.send(
                "warning",
                "LeaderStopped",
                f"shard {controller.shard_id}: leader {node.region.name} stopped "
                "gracefully and resigned",
                {"shard": controller.shard_id},
            )
        controller.role = Role.FENCED
    if node.api_server is not None:
        node.api_server.should_exit = True
    for controller in node.controllers.values():
        controller.writer.stop()
        controller.gate.fail_all()
    if coord is not None:
        coord.stop()
    if node.archiving is not None:
        node.archiving.stop()
    if node.projection is not None:
        node.projection.stop()
    node.alerts.close()  # what is queued reaches the webhook before the process ends
