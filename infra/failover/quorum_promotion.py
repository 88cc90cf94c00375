"""Which replica takes a shard over, and what it fetches first (application/replication/quorum.py).

Every node publishes each shard's replica position (epoch, seq, kind) in ZooKeeper every health
round, as an ephemeral node that dies with its session: the members listed are the live ones.
When a leader is gone, a standby fails over only if it is the best candidate among the live
members (most records of the highest epoch; ties by priority, then name), or if the best one
did not act within one more `failover_after`. Before it takes commands it fetches, from each
survivor ahead of it (a witness too), the records it lacks, reading their stores as it reads
the leader's: every acknowledged record is on a majority, so the survivors hold it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from application.replication.quorum import (
    Position,
    ReplicaKind,
    ReplicaPosition,
    best_candidate,
    sources_for,
)

if TYPE_CHECKING:
    from infra.failover.controller import ShardController

log = logging.getLogger("exchange_dr.failover")

CATCH_UP_TIMEOUT_S = 10.0  # one survivor's store; a source ahead of us that fails blocks promotion


@dataclass(frozen=True)
class PromotionDecision:
    """Whether this standby should fail over now, and the sentence that says why."""

    go: bool
    why: str
    best: str | None = None
    sources: tuple[str, ...] = ()


def positions_from(
    members: Iterable[Mapping[str, Any]],
    priorities: Mapping[str, int],
    kinds: Mapping[str, ReplicaKind] | None = None,
) -> list[ReplicaPosition]:
    """Published member nodes -> replica positions. Malformed ones are skipped, and so are
    regions that are not configured (`priorities` names every configured one): a name read
    from ZooKeeper is never opened as a store. The kind published is checked against the
    configured one where given (`kinds`): a witness cannot present itself as promotable."""
    found: list[ReplicaPosition] = []
    for raw in members:
        try:
            region = str(raw["region"])
            kind = ReplicaKind(str(raw.get("kind", ReplicaKind.FULL.value)))
            position = Position(int(raw["epoch"]), int(raw["seq"]))
        except (KeyError, TypeError, ValueError):
            continue
        if region not in priorities:
            continue
        if kinds is not None:
            kind = kinds.get(region, kind)
        found.append(ReplicaPosition(region, kind, position, priorities[region]))
    return found


def decide(
    me: ReplicaPosition,
    live: Iterable[ReplicaPosition],
    *,
    unhealthy_for_s: float,
    failover_after_s: float,
    planned: bool = False,
) -> PromotionDecision:
    """The promotion rule among live replicas (pure: the controller gathers the facts).

    `live` are the other live replicas' positions (this one's is `me`, fresher than what it
    published). A planned switchover names its target: it goes. Otherwise the best candidate
    goes; another standby goes only once the best let one more `failover_after` pass."""
    others = [r for r in live if r.region != me.region]
    everyone = [me, *others]
    best = best_candidate(everyone)
    sources = tuple(sources_for(me, others))
    if not me.promotable:
        return PromotionDecision(False, f"{me.region} is a witness: it never leads")
    if planned:
        return PromotionDecision(True, "planned switchover names this region", me.region, sources)
    if best is None or best.region == me.region:
        return PromotionDecision(
            True,
            f"{me.region} is the best candidate at {me.position.epoch}/{me.position.seq} among "
            f"{len(everyone)} live replica(s)",
            me.region,
            sources,
        )
    if unhealthy_for_s >= 2 * failover_after_s:
        return PromotionDecision(
            True,
            f"best candidate {best.region} did not act within {failover_after_s:.2f}s more; "
            f"{me.region} takes over after fetching from {', '.join(sources) or 'nobody'}",
            best.region,
            sources,
        )
    return PromotionDecision(
        False,
        f"{best.region} is ahead ({best.position.epoch}/{best.position.seq} against "
        f"{me.position.epoch}/{me.position.seq}): waiting for it to take over",
        best.region,
        sources,
    )


def priorities_of(controller: ShardController) -> dict[str, int]:
    """Among equals the region listed first in EXDR_REGIONS wins (every node agrees)."""
    names = [name for name, _ in controller.ctx.replicas] or [
        controller.ctx.region,
        *controller.ctx.peers,
    ]
    return {name: len(names) - i for i, name in enumerate(names)}


def own_position(controller: ShardController) -> ReplicaPosition:
    region = controller.ctx.region
    app = controller.app
    return ReplicaPosition(
        region,
        controller.ctx.kind_of(region),
        Position(int(app.epoch), int(app.seq)),
        priorities_of(controller).get(region, 0),
    )


async def publish_position(controller: ShardController) -> None:
    """One health round's refresh of this replica's published position (errors are logged:
    ZooKeeper may be away, and the ephemeral node is then gone with the session anyway)."""
    me = own_position(controller)
    try:
        await asyncio.to_thread(
            controller.coord.publish_position,
            controller.shard_id,
            kind=me.kind.value,
            epoch=me.position.epoch,
            seq=me.position.seq,
        )
    except Exception as exc:
        log.debug("position of shard=%s not published: %s", controller.shard_id, exc)


async def ready_to_promote(
    controller: ShardController, *, unhealthy_for_s: float, planned: bool
) -> bool:
    """The controller's hook before it promotes: decide among the live members, then fetch from
    the survivors ahead of this one. False: do not promote now (logged with the reason)."""
    coord = controller.coord
    shard = controller.shard_id
    await publish_position(controller)
    members = await asyncio.to_thread(coord.members, shard)
    live = positions_from(
        members,
        priorities_of(controller),
        {name: controller.ctx.kind_of(name) for name in priorities_of(controller)},
    )
    decision = decide(
        own_position(controller),
        live,
        unhealthy_for_s=unhealthy_for_s,
        failover_after_s=controller.ctx.failover.failover_after_s,
        planned=planned,
    )
    log.warning("promotion shard=%s region=%s: %s", shard, controller.ctx.region, decision.why)
    if not decision.go:
        return False
    for source in decision.sources:
        if not await fetch_from(controller, source):
            if source == controller.leader_region:
                # the deposed leader's own store (lost with its region, or why it resigned):
                # what only it holds was never confirmed by another replica, so never
                # acknowledged in sync mode; every acknowledged record is on a follower
                log.warning(
                    "promotion shard=%s region=%s: the old leader %s's store did not answer; "
                    "what only it holds was never acknowledged, promoting without it",
                    shard,
                    controller.ctx.region,
                    source,
                )
                continue
            controller.ctx.alerts.send(
                "critical",
                "FailoverRefused",
                f"cannot fail over shard {shard}: {source} holds records "
                f"{controller.ctx.region} lacks and its store did not answer; the shard "
                "stays down rather than lose acknowledged records",
                {"shard": shard, "region": controller.ctx.region, "source": source},
            )
            return False
    return True


async def fetch_from(controller: ShardController, source: str) -> bool:
    """Pull from `source`'s store (verified, epoch-checked, like a gap fill from the leader's)
    every record beyond this replica's head; True once done."""
    shard = controller.shard_id
    replicator = controller.replicator
    before = controller.app.seq
    view = controller.leader_views.get(source)
    if view is None:
        view = await asyncio.to_thread(controller.ctx.open_store, source)
        controller.leader_views[source] = view
    controller.history = await asyncio.to_thread(controller.coord.epochs, shard)
    saved = replicator.primary
    replicator.primary = view.store
    try:
        seq = await asyncio.wait_for(
            asyncio.wrap_future(controller.writer.query(lambda _: replicator.catch_up())),
            CATCH_UP_TIMEOUT_S,
        )
    except Exception as exc:
        log.error("fetch from %s failed shard=%s: %s", source, shard, exc)
        return False
    finally:
        replicator.primary = saved
    log.warning(
        "fetched shard=%s from=%s seq %s -> %s before promotion", shard, source, before, seq
    )
    return True
