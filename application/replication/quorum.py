"""The majority rule: when a record is safe, and which replica may take over a shard.

A shard has N replicas on distinct sites: the leader, full standbys (hot state, promotable) and
log-only witnesses (they store and verify the WAL, confirm it, and never lead). A record is
acknowledged once a majority of the N replicas, the leader included, stored it durably. So the
leader needs `majority(N) - 1` confirmations from followers, and with N = 3 any one replica may be
lost or slow without a client noticing.

Whoever is promoted must hold every acknowledged record. Any majority intersects the majority
that stored an acknowledged record, so among the survivors of a single loss at least one holds
it; the candidate is the promotable survivor with the most records of the highest epoch, and it
fetches from the other survivors (witnesses included) whatever it lacks before it writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


class ReplicaKind(StrEnum):
    FULL = "full"  # leader or hot standby: full state, may be promoted
    WITNESS = "witness"  # log only: stores, verifies and confirms records; never leads


class QuorumError(ValueError):
    """A replica set that cannot keep RPO 0 through the loss of one replica."""


def majority(replicas: int) -> int:
    """Smallest number of replicas that is more than half of `replicas`."""
    if replicas < 1:
        raise QuorumError(f"a shard needs at least one replica, not {replicas}")
    return replicas // 2 + 1


def confirmations_needed(replicas: int) -> int:
    """Follower confirmations a leader needs beside its own copy."""
    return majority(replicas) - 1


def quorum_seq(confirmed: Mapping[str, int], replicas: int, leader_seq: int) -> int:
    """Highest seq that a majority of `replicas` holds: the leader's own copy up to `leader_seq`
    plus the followers' confirmed seqs (`confirmed`, one entry per follower that answered)."""
    need = confirmations_needed(replicas)
    if need == 0:
        return leader_seq
    held = sorted((min(seq, leader_seq) for seq in confirmed.values()), reverse=True)
    if len(held) < need:
        return 0
    return held[need - 1]


@dataclass(frozen=True, order=True)
class Position:
    """How far one replica's copy of a shard reaches: the epoch of its last record, then its seq.
    Ordered by (epoch, seq): a longer log of an older epoch loses to a shorter one of a newer."""

    epoch: int
    seq: int


@dataclass(frozen=True)
class ReplicaPosition:
    region: str
    kind: ReplicaKind
    position: Position
    priority: int = 0  # among equals, the higher priority is promoted (then the name decides)

    @property
    def promotable(self) -> bool:
        return self.kind is ReplicaKind.FULL


def best_candidate(replicas: Iterable[ReplicaPosition]) -> ReplicaPosition | None:
    """The promotable replica with the most records of the highest epoch; ties go to the higher
    priority, then to the first name in alphabetical order (every controller picks the same)."""
    promotable = [r for r in replicas if r.promotable]
    if not promotable:
        return None
    return min(
        promotable, key=lambda r: (-r.position.epoch, -r.position.seq, -r.priority, r.region)
    )


def sources_for(candidate: ReplicaPosition, survivors: Iterable[ReplicaPosition]) -> list[str]:
    """Survivors (witnesses too) holding records the candidate lacks, the furthest first: the
    candidate fetches from them before it appends its new epoch."""
    ahead = [
        r for r in survivors if r.region != candidate.region and r.position > candidate.position
    ]
    ahead.sort(key=lambda r: (r.position, r.region), reverse=True)
    return [r.region for r in ahead]


def check_replica_set(kinds: Mapping[str, ReplicaKind]) -> None:
    """A replica set keeps RPO 0 and a leader through the loss of any one site only if it has
    at least three replicas and at least two of them may lead."""
    if len(kinds) < 3:
        raise QuorumError(
            f"{len(kinds)} replicas cannot survive the loss of one with RPO 0: configure 3 or more"
        )
    promotable = sum(1 for kind in kinds.values() if kind is ReplicaKind.FULL)
    if promotable < 2:
        raise QuorumError(
            f"only {promotable} promotable replica(s): at least 2 must be able to lead"
        )
