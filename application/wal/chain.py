"""The hash chain of a shard's WAL: each record names the checksum of the record before it.

A record removed, reordered, replaced or replayed from another history no longer links to its
neighbour, wherever it is found: on the wire, on a standby's intake, in a recovery's replay.
Records written before records were chained carry no link; a store records up to which seq
such records stand (its chain start), and one found after it is as corrupt as a broken link.
"""

from __future__ import annotations

from dataclasses import dataclass

from application.wal.records import GENESIS, WALCorruptionError


class ChainBrokenError(WALCorruptionError):
    """A record that is not the successor of the record before it."""


@dataclass
class ChainCursor:
    """Walks a shard's records in seq order, checking each link.

    `last` is the checksum of the record before the next one (GENESIS before seq 1; None while
    unknown: the first link is then taken as it is). `legacy_upto`: records at or below it may
    be unchained (written before the chain started).
    """

    shard_id: str
    last: str | None = GENESIS
    legacy_upto: int = 0

    def check(self, seq: int, prev_checksum: str | None) -> None:
        """Raises ChainBrokenError unless a record at `seq` naming `prev_checksum` may follow."""
        if prev_checksum is None:
            if seq > self.legacy_upto:
                raise ChainBrokenError(
                    self.shard_id, seq, f"unchained record after the chain start {self.legacy_upto}"
                )
        elif self.last is not None and prev_checksum != self.last:
            raise ChainBrokenError(
                self.shard_id,
                seq,
                f"broken hash chain: names {prev_checksum[:16]}... as its predecessor, "
                f"the record before it is {self.last[:16]}...",
            )

    def advance(self, seq: int, prev_checksum: str | None, checksum: str) -> None:
        """Check the link of a verified record, then stand after it."""
        self.check(seq, prev_checksum)
        self.last = checksum
