"""Checkpoints written before the columnar layout (application/checkpoints/checkpoint.py).

Their state is a length-prefixed JSON document of counters, then one snapshot per aggregate,
framed like a WAL payload. They are still read, so that a shard whose newest checkpoint is one
of them recovers from it rather than from the start of its WAL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import Aggregate, Snapshot

from application.wal.records import iter_payload

DecodeFn = Callable[[UUID, int, str, bytes], Any]


def decode_snapshots(state: bytes, decode: DecodeFn) -> tuple[list[Aggregate], dict[str, int]]:
    """The aggregates and counters of a checkpoint's state; `decode` turns a stored snapshot
    (id, version, topic, state) into its Snapshot. Raises ValueError on undecodable bytes."""
    counters_length = int.from_bytes(state[:4], "big")
    counters = json.loads(state[4 : 4 + counters_length])
    aggregates = []
    try:
        stored = list(iter_payload(state[4 + counters_length :]))
    except ValueError as exc:
        raise ValueError(f"undecodable checkpoint: {exc}") from None
    for originator_id, version, topic, event_state in stored:
        snapshot = cast(Snapshot, decode(originator_id, version, topic, event_state))
        aggregates.append(cast(Aggregate, snapshot.mutate(None)))
    return aggregates, {str(k): int(v) for k, v in counters.items()}
