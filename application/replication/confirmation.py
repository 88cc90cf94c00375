"""Which standby confirmations a leader may count: signed, of our epoch, of our very record.

A confirmation releases every acknowledgement up to its seq, so a forged one ("seq 10^12")
would acknowledge commands no standby holds. A confirmation therefore names the checksum of
the record it confirms and carries a MAC of the regions' key (application/wal/auth.py); the
leader counts it only if the MAC verifies, its epoch is the leader's, and the checksum is the
one of the leader's own record at that seq: a standby that stored another history (or nothing)
cannot confirm ours.

What a confirmation says new is judged per follower: with three replicas the leader's
majority seq is the faster follower's position, and the slower one's confirmations below it
still move what that follower holds (`SyncGate.stored_on`), which a switchover to it and the
WAL archive wait for. Only a region's own earlier confirmation makes one redundant.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from application.wal.auth import RejectedError, Rejection, ReplicationKeys
from application.wal.records import WalRecord

WINDOW = 1 << 16  # committed records whose checksum is kept in memory


class ConfirmationCheck:
    """One shard's leader side: the checksums of its recent records, and the verdict."""

    def __init__(
        self,
        shard_id: str,
        keys: ReplicationKeys,
        *,
        lookup: Callable[[int], str | None] | None = None,
        window: int = WINDOW,
    ) -> None:
        self.shard_id = shard_id
        self.keys = keys
        self._lookup = lookup  # the checksum of an older record, from the store
        self._window = window
        self._recent: OrderedDict[int, str] = OrderedDict()
        self.rejected: dict[str, int] = {}

    def committed(self, records: Sequence[WalRecord]) -> None:
        """Records this leader committed (its writer's hook, before they are sent)."""
        recent = self._recent
        for record in records:
            recent[record.seq] = record.checksum
        while len(recent) > self._window:
            recent.popitem(last=False)

    def verify(
        self,
        ack: Mapping[str, Any],
        *,
        head_seq: int,
        epoch: int,
        confirmed: Callable[[str], int | None] | None = None,
    ) -> int | None:
        """The seq a confirmation proves stored by a standby, None if it proves nothing new
        (an older epoch's, or at most what its own region confirmed already: `confirmed`
        of the signed region, e.g. `SyncGate.stored_on`); RejectedError, counted by reason,
        if it does not verify. `head_seq`, `epoch` and `confirmed` are the leader's. The
        region is taken from the signed fields, so no one can skip a check by naming
        another region: the MAC covers it."""
        try:
            shard, region, ack_epoch, seq, checksum = self.keys.verify_confirmation(ack)
            if shard != self.shard_id:
                raise RejectedError(Rejection.MALFORMED, f"names shard {shard[:40]!r}")
            already = (confirmed(region) if confirmed is not None else None) or 0
            if ack_epoch < epoch or seq <= already:
                return None  # true once, perhaps; proves nothing about what waits now
            if seq > head_seq:
                raise RejectedError(Rejection.AHEAD, f"seq {seq}, this leader's head is {head_seq}")
            own = self._recent.get(seq)
            if own is None and self._lookup is not None:
                own = self._lookup(seq)
            if own is None or own != checksum:
                raise RejectedError(
                    Rejection.MISMATCH, f"seq {seq} is not this leader's record {seq}"
                )
        except RejectedError as exc:
            self.rejected[exc.reason.value] = self.rejected.get(exc.reason.value, 0) + 1
            raise
        return seq
