"""Keyed authentication of what regions tell each other: WAL records and confirmations.

A SHA-256 checksum proves a record was not damaged, not who wrote it: anyone who can write to
the broker can compute one. Each record therefore also carries an HMAC-SHA256 under the key
the regions share (EXDR_REPLICATION_KEY), and so does each standby confirmation. A tag names
the id of its key ("k2:9f3c..."), so a key is rotated without downtime: every region first
accepts the new key beside the old, then signs with it, then drops the old one.

What a record's MAC covers: its checksum, which is SHA-256 over the record's canonical
encoding (the header with shard, epoch, seq, command, key, time and the previous record's
checksum, then the payload). HMAC over that digest authenticates the whole encoding as long as
SHA-256 resists collisions, and costs one short HMAC per record instead of a second pass over
the payload. Domain prefixes keep a record's tag from passing for a confirmation's.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Rejection(StrEnum):
    """Why a message was refused (the `reason` label of replication_rejected_total)."""

    MALFORMED = "malformed"  # not a record or confirmation at all
    CHECKSUM = "checksum"  # content does not match its checksum
    NO_MAC = "no_mac"  # no tag where one is required
    UNKNOWN_KEY = "unknown_key"  # tagged with a key id this region does not accept
    BAD_MAC = "bad_mac"  # the tag does not verify
    CHAIN = "chain"  # verified, but not the successor of the record before it
    UNKNOWN_TYPE = "unknown_type"  # names a class or enum that is not ours
    AHEAD = "ahead"  # a confirmation of a record this leader never wrote
    MISMATCH = "mismatch"  # a confirmation of another record than ours at that seq


class RejectedError(Exception):
    """A message refused before it changed anything."""

    def __init__(self, reason: Rejection, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


_RECORD = b"exdr-record\n"
_CONFIRMATION = b"exdr-confirmation\n"


@dataclass(frozen=True)
class ReplicationKeys:
    """The regions' shared keys by id; `current_id` signs, every one listed verifies."""

    current_id: str
    keys: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.current_id not in self.keys:
            raise ValueError(f"the current replication key id {self.current_id!r} has no key")
        for key_id, key in self.keys.items():
            if not key_id or ":" in key_id or not key:
                raise ValueError(f"replication key {key_id!r}: an id without ':' and a key")

    def _tag(self, key_id: str, message: bytes) -> str:
        return f"{key_id}:{hmac.digest(self.keys[key_id], message, 'sha256').hex()}"

    def _verify(self, message: bytes, tag: object) -> None:
        if not isinstance(tag, str) or not tag:
            raise RejectedError(Rejection.NO_MAC, "no MAC")
        key_id, _, _ = tag.partition(":")
        if key_id not in self.keys:
            raise RejectedError(Rejection.UNKNOWN_KEY, f"key id {key_id[:40]!r} is not accepted")
        if not hmac.compare_digest(self._tag(key_id, message), tag):
            raise RejectedError(Rejection.BAD_MAC, "MAC does not verify")

    # -- records ---------------------------------------------------------------------------

    def sign_record(self, checksum: str) -> str:
        return self._tag(self.current_id, _RECORD + checksum.encode())

    def verify_record(self, checksum: str, mac: object) -> None:
        """Raises RejectedError unless `mac` is a tag of `checksum` under an accepted key."""
        self._verify(_RECORD + checksum.encode(), mac)

    # -- confirmations ---------------------------------------------------------------------

    @staticmethod
    def _confirmation(shard: str, region: str, epoch: int, seq: int, checksum: str) -> bytes:
        fields = [shard, region, epoch, seq, checksum]
        return _CONFIRMATION + json.dumps(fields, separators=(",", ":")).encode()

    def confirmation(
        self, shard: str, region: str, epoch: int, seq: int, checksum: str, **extra: Any
    ) -> dict[str, Any]:
        """A standby's signed confirmation: every record up to `seq`, the last one being
        the record whose checksum is `checksum`, is stored in `region`."""
        tag = self._tag(self.current_id, self._confirmation(shard, region, epoch, seq, checksum))
        return {
            "shard": shard,
            "region": region,
            "seq": seq,
            "epoch": epoch,
            "checksum": checksum,
            **extra,
            "mac": tag,
        }

    def verify_confirmation(self, ack: Mapping[str, Any]) -> tuple[str, str, int, int, str]:
        """(shard, region, epoch, seq, checksum) of a confirmation whose MAC verifies."""
        try:
            shard, region = ack["shard"], ack["region"]
            epoch, seq, checksum = ack["epoch"], ack["seq"], ack["checksum"]
            if not (type(shard) is str and type(region) is str and type(checksum) is str):
                raise TypeError("shard, region and checksum are strings")
            if not (type(epoch) is int and type(seq) is int):
                raise TypeError("epoch and seq are integers")
        except (KeyError, TypeError) as exc:
            raise RejectedError(Rejection.MALFORMED, f"not a confirmation: {exc}") from None
        self._verify(self._confirmation(shard, region, epoch, seq, checksum), ack.get("mac"))
        return shard, region, epoch, seq, checksum


DEVELOPMENT_KEY_ID = "dev"
DEVELOPMENT_KEY = b"exdr-development-replication-key (set EXDR_REPLICATION_KEY)"
