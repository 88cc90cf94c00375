"""What a shard may move from its live WAL to the archive, and which checkpoints it keeps.

A record leaves the live table only when nothing still needs it there:
- a durable checkpoint covers it (recovery starts at or after it, never before);
- every standby that follows the shard has stored it (a standby's gap is filled from the live
  table), unless that standby has been away longer than the maximum hold: then it no longer
  holds archiving back, an alert says so, and it re-seeds from a checkpoint when it returns;
- it is older than the retention window (the newest `retain_records` stay live);
- the region's read models have projected it, where the region serves history from them: the
  facade serves orders and trades from the read models plus the live WAL after their tracking
  row, so a record archived before they have it would be missing from history. A shard with no
  tracking row at all (the read models never ran here) holds archiving entirely, and says so,
  until they do; a region that serves no history (a witness) or an operator's explicit choice
  (EXDR_ARCHIVE_READ_MODELS=ignore) does not wait.

A segment ends at a checkpoint, so every archived range starts where a kept checkpoint (or the
very beginning) is: a replay can start at any segment. Each decision comes with a sentence that
is logged and asserted in tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    retain_records: int = 1_000_000
    max_hold_s: float = 3600.0
    segment_records: int = 100_000
    checkpoints_keep: int = 3

    def __post_init__(self) -> None:
        if self.retain_records < 0 or self.segment_records < 1 or self.checkpoints_keep < 1:
            raise ValueError("retention: retain_records >= 0, segment_records >= 1, keep >= 1")


@dataclass(frozen=True, slots=True)
class Follower:
    """A standby of the shard as the leader last saw it."""

    name: str
    stored_seq: int
    away_s: float  # since its last confirmation


@dataclass(frozen=True, slots=True)
class Projected:
    """How far the region's read models (projection `name`) have applied the shard; `seq`
    None: no tracking row, they never ran here."""

    name: str
    seq: int | None


@dataclass(frozen=True, slots=True)
class ArchivePlan:
    """The next segment to archive (None: nothing now) and why."""

    first_seq: int | None
    last_seq: int | None
    reason: str
    released: tuple[str, ...] = field(default=())  # standbys away past the hold, ignored
    # the read models are what limits archiving now (behind the window, or never ran)
    held_by_read_models: bool = False

    @property
    def due(self) -> bool:
        return self.first_seq is not None


def plan_segment(
    policy: RetentionPolicy,
    *,
    head_seq: int,
    archived_seq: int,
    checkpoint_seqs: Sequence[int],
    followers: Iterable[Follower] = (),
    projected: Projected | None = None,
) -> ArchivePlan:
    """The next range (archived_seq, c] that may leave the live table, c a checkpoint seq.
    `projected`: the region's read models, None where archiving need not wait for them."""
    limit = head_seq - policy.retain_records
    why = f"window keeps the newest {policy.retain_records} of {head_seq}"
    released: list[str] = []
    for follower in followers:
        if follower.away_s > policy.max_hold_s:
            released.append(follower.name)
        elif follower.stored_seq < limit:
            limit = follower.stored_seq
            why = f"standby {follower.name} has stored up to {follower.stored_seq}"
    held = False
    if projected is not None:
        upto = 0 if projected.seq is None else projected.seq
        if upto < limit:
            limit, held = upto, True
            why = (
                f"read models have projected up to {upto} ({projected.name})"
                if projected.seq is not None
                else f"read models have no tracking row for the shard ({projected.name}): "
                "held until they project it"
            )
    covered = [s for s in checkpoint_seqs if archived_seq < s <= limit]
    if limit <= archived_seq:
        return ArchivePlan(None, None, f"nothing to archive: {why}", tuple(released), held)
    if not covered:
        return ArchivePlan(
            None,
            None,
            f"nothing to archive: no checkpoint in ({archived_seq}, {limit}] ({why})",
            tuple(released),
            held,
        )
    within = [s for s in covered if s - archived_seq <= policy.segment_records]
    end = max(within) if within else min(covered)
    return ArchivePlan(
        archived_seq + 1,
        end,
        f"archive {archived_seq + 1}..{end}: checkpoint at {end}, {why}",
        tuple(released),
        held,
    )


def checkpoints_to_delete(
    checkpoint_seqs: Sequence[int],
    keep: int,
    segment_starts: Iterable[int],
    *,
    archived_seq: int = 0,
    segment_records: int = 0,
) -> list[int]:
    """Checkpoints to delete: not among the newest `keep`, not at the start of an archived
    range (a segment's first seq - 1); of those not archived yet, the newest of every
    `segment_records` seqs stay too, as the ends of the segments to come."""
    newest = set(sorted(checkpoint_seqs)[-keep:])
    anchors = {first - 1 for first in segment_starts}
    ends: dict[int, int] = {}
    if segment_records > 0:
        for seq in checkpoint_seqs:
            if seq > archived_seq:
                bucket = seq // segment_records
                ends[bucket] = max(seq, ends.get(bucket, seq))
    kept = newest | anchors | set(ends.values())
    return [s for s in checkpoint_seqs if s not in kept]
