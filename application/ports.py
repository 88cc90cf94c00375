"""What the application layer needs from its store, beyond eventsourcing's recorder."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from eventsourcing.persistence import StoredEvent

from application.wal.records import WalRecord


@dataclass(frozen=True, slots=True)
class Head:
    """Where a shard's WAL ends and which epoch wrote it last."""

    shard_id: str
    seq: int
    epoch: int


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A shard checkpoint: the encoded engine state at `seq`, sealed by a checksum."""

    shard_id: str
    seq: int
    epoch: int
    state: bytes
    state_hash: str
    checksum: str


@runtime_checkable
class WalStore(Protocol):
    """The WAL side of the event store.

    `append` commits a batch of WAL records with their aggregate events in one transaction
    (the recorder's `insert_events` stays eventsourcing's path, used for snapshots). The other
    methods read the WAL, keep its checkpoints and relay positions, and set a divergent tail
    aside.
    """

    def append(
        self,
        stored_events: Sequence[StoredEvent],
        records: Sequence[WalRecord],
        *,
        epoch: int,
        prev_seq: int,
    ) -> None:
        """Commit records after `prev_seq` under `epoch`; refused (WriterFencedError) if
        another writer moved the head or a newer epoch owns the shard."""

    def head(self, shard_id: str) -> Head: ...

    def read_records(
        self, shard_id: str, after_seq: int, limit: int, *, verify: bool = True
    ) -> Sequence[WalRecord]: ...

    def iter_records(
        self, shard_id: str, after_seq: int, *, page: int = 2000, upto_seq: int | None = None
    ) -> Iterator[WalRecord]: ...

    def find_command_keys(self, shard_id: str, keys: Iterable[str]) -> Mapping[str, int]: ...

    def save_checkpoint(self, checkpoint: StoredCheckpoint) -> None: ...

    def latest_checkpoint(
        self, shard_id: str, *, at_or_before: int | None = None
    ) -> StoredCheckpoint | None: ...

    def latest_checkpoint_hash(
        self, shard_id: str, *, at_or_before: int | None = None
    ) -> tuple[int, str] | None: ...

    def checkpoint_seqs(self, shard_id: str) -> Sequence[int]: ...

    def relay_position(self, shard_id: str) -> int: ...

    def first_divergent_seq(
        self, shard_id: str, history: Sequence[tuple[int, int]]
    ) -> int | None: ...

    def quarantine_from(self, shard_id: str, fork_seq: int, reason: str) -> int: ...

    def save_relay_position(self, shard_id: str, seq: int) -> None: ...
