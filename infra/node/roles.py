"""Each shard's first role when a node starts, then the failover manager's periodic tasks:
ZooKeeper's callbacks, a health round every `health_interval`, expiry of waiting acknowledgements.
The decisions themselves are the controller's (infra/failover/controller.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import httpx

from infra.coordination.base import LeaderInfo
from infra.failover.quorum_promotion import publish_position
from infra.failover.state import Role
from infra.node.node import Node

log = logging.getLogger("exchange_dr.node")


async def take_initial_roles(node: Node) -> None:
    """Lead a brand-new shard if preferred; otherwise follow whoever leads (rejoining first)."""
    coord = node.coordinator
    assert coord is not None
    for shard_id, controller in node.controllers.items():
        leader = await asyncio.to_thread(coord.refresh_leader, shard_id)
        deadline = time.monotonic() + coord.session_timeout_s * 2
        while leader is not None and leader.region == node.region.name:
            # our previous life's session has not expired yet: it cannot be used, wait it out
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
            leader = await asyncio.to_thread(coord.refresh_leader, shard_id)
        history = await asyncio.to_thread(coord.epochs, shard_id)
        if leader is None and not history and node.region.name == node.settings.preferred_leader:
            applied = await asyncio.wrap_future(controller.writer.query(lambda app: app.seq))
            epoch = await asyncio.to_thread(
                coord.take_leadership,
                shard_id,
                applied_seq=applied,
                min_epoch=controller.app.epoch,
            )

            def adopt(app: Any, epoch: int = epoch) -> int:
                app.epoch = epoch
                return int(app.seq)

            await asyncio.wrap_future(controller.writer.query(adopt))
            controller.history = await asyncio.to_thread(coord.epochs, shard_id)
            controller.start_relay()
            controller.role = Role.LEADER
            log.warning(
                "bootstrap leader shard=%s region=%s epoch=%s", shard_id, node.region.name, epoch
            )
        elif leader is not None and leader.region != node.region.name:
            controller.role = Role.FENCED
            await controller.become_standby()
        else:
            controller.history = history
            # an empty store of a shard nobody ever led holds nothing to set aside; anything
            # else waits for a rejoin check before its reads count as confirmed
            controller.rejoin_checked = not history and controller.app.seq == 0
            controller.role = Role.STANDBY
            log.warning("shard=%s has no leader: standing by for the failover manager", shard_id)


def wire_failover(node: Node) -> None:
    interval = node.settings.failover.health_interval_s
    client = httpx.AsyncClient()
    started = asyncio.Event()
    # set when the leader node of a shard disappears: that ends a failover's detection (the old
    # leader's session expired), so the next health round runs now, not up to an interval later
    leader_gone = asyncio.Event()

    @node.faust_app.task  # type: ignore[untyped-decorator]
    async def roles() -> None:
        coord = node.coordinator
        assert coord is not None
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(coord.start, list(node.controllers))

        def leader_changed(shard: str, info: LeaderInfo | None) -> None:
            controller = node.controllers[shard]
            if info is None:
                loop.call_soon_threadsafe(leader_gone.set)
            elif info.region != node.region.name:
                loop.call_soon_threadsafe(asyncio.ensure_future, controller.follow(info))

        def deposed(shard: str, why: str) -> None:
            controller = node.controllers[shard]

            def schedule() -> None:
                controller.rejoin_task = asyncio.ensure_future(controller.deposed(why))

            loop.call_soon_threadsafe(schedule)

        coord.on_leader_change = leader_changed
        coord.on_deposed = deposed
        await take_initial_roles(node)
        started.set()

    @node.faust_app.task  # type: ignore[untyped-decorator]
    async def health() -> None:
        await started.wait()
        while True:
            began = time.monotonic()
            try:
                await asyncio.gather(
                    *(c.check(client) for c in node.controllers.values()),
                    *(c.check_store() for c in node.controllers.values()),
                    *(publish_position(c) for c in node.controllers.values()),
                )
            except Exception as exc:  # a round that failed is a round; the next one comes
                log.error("health round failed: %s", exc)
            rest = max(0.0, interval - (time.monotonic() - began))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(leader_gone.wait(), rest)
            leader_gone.clear()

    @node.faust_app.task  # type: ignore[untyped-decorator]
    async def expire_waits() -> None:
        while True:
            for controller in node.controllers.values():
                controller.gate.tick()
            # deadlines are of a second or more: a 20 ms check costs a tenth of the wake-ups
            await asyncio.sleep(0.02)
