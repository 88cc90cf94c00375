"""Whether a standby re-seeds: its gap reaches records its leader has archived.

A standby fills a gap from the leader's live WAL table. Once the leader has archived past the
standby's applied seq (the standby was away longer than the maximum hold, or came back from an
old backup), the first missing record is no longer there, and copying the archive record by
record through the intake would apply every archived command again. The standby is re-seeded
instead, the way a database replica is re-initialised from a base backup:

- its archive takes the leader's segments up to the leader's archived seq (copied, every file
  and record checksum and every chain link verified, the seam with what the standby already
  holds too), with manifest rows of its own: the standby's WAL stays whole, records before the
  checkpoint are held in its archive, and replay from scratch reads them like any archived range;
- the leader's newest checkpoint at or after its archived seq is installed, with the records
  between the archived seq and that checkpoint stored (not applied: the checkpoint holds their
  effect), and the standby goes on from the live table after it.

Where the leader's segments are out of this region's reach (another machine's directory, an
object store without credentials here), nothing is re-seeded: the standby is refused with an
alert naming the range and the archive, and stops asking the leader's store for records it
cannot have (no error loop). Making the archive reachable (EXDR_ARCHIVE_URL) lets the next
catch-up re-seed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class ReseedAction(StrEnum):
    NONE = "none"  # the gap starts in the leader's live table: fill it from there
    RESEED = "reseed"  # from the leader's checkpoint and archive
    REFUSE = "refuse"  # the gap is archived and cannot be re-seeded from here


@dataclass(frozen=True, slots=True)
class ReseedPlan:
    """What a standby does about its gap, and why (a sentence for logs, alerts and tests)."""

    action: ReseedAction
    reason: str
    from_seq: int = 0  # the first record the standby lacks
    archived_to: int = 0  # the leader's archived seq: the gap's archived part ends here
    checkpoint_seq: int | None = None  # the leader's checkpoint the standby takes

    @property
    def reaches_archive(self) -> bool:
        return self.action is not ReseedAction.NONE


def plan_reseed(
    *,
    applied_seq: int,
    leader_archived_seq: int,
    leader_checkpoint_seqs: Sequence[int],
    unreadable: Sequence[str] = (),
    archive_url: str = "",
) -> ReseedPlan:
    """The standby at `applied_seq` against a leader that archived up to
    `leader_archived_seq` and keeps checkpoints at `leader_checkpoint_seqs`; `unreadable`: the
    leader's segment files this region cannot read at `archive_url`."""
    if applied_seq < 0 or leader_archived_seq < 0:
        raise ValueError("seqs are >= 0")
    first = applied_seq + 1
    if first > leader_archived_seq:
        return ReseedPlan(
            ReseedAction.NONE,
            f"gap starts at {first}, after the leader's archived seq {leader_archived_seq}: "
            "filled from the live table",
            first,
            leader_archived_seq,
        )
    gap = f"seqs {first}..{leader_archived_seq} are archived on the leader"
    if unreadable:
        shown = ", ".join(unreadable[:3]) + (" ..." if len(unreadable) > 3 else "")
        return ReseedPlan(
            ReseedAction.REFUSE,
            f"{gap}, and its segments are not readable from this region at "
            f"{archive_url or '(no archive)'} ({shown}): not re-seeded; make the leader's "
            "archive reachable (EXDR_ARCHIVE_URL)",
            first,
            leader_archived_seq,
        )
    usable = [s for s in leader_checkpoint_seqs if s >= leader_archived_seq]
    if not usable:
        return ReseedPlan(
            ReseedAction.REFUSE,
            f"{gap}, and the leader keeps no checkpoint at or after {leader_archived_seq}: "
            "not re-seeded",
            first,
            leader_archived_seq,
        )
    checkpoint = max(usable)
    return ReseedPlan(
        ReseedAction.RESEED,
        f"{gap}: re-seed from the leader's archive up to {leader_archived_seq} and its "
        f"checkpoint at {checkpoint}",
        first,
        leader_archived_seq,
        checkpoint,
    )
