"""Records travel in runs: the relay packs up to `per_message` per broker message, consumers
unpack them, and a record altered inside a run is a hole, not a lost run."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from application.wal.records import WalRecord
from projections.agents import decode_deliveries
from projections.replication.relay import Relay
from tests.unit.wal_records import sealed_records


def _records(count: int) -> list[WalRecord]:
    return sealed_records(count)


class _Topic:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, *, key: bytes, value: bytes) -> asyncio.Future[None]:
        self.sent.append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def test_the_relay_sends_runs_and_consumers_get_every_record_back() -> None:
    topic = _Topic()
    relay = Relay("shard-1", store=None, topic=topic, per_message=100)  # type: ignore[arg-type]
    records = _records(250)
    asyncio.run(relay._publish(records))
    assert len(topic.sent) == 3 and relay.position == 250
    delivered = [d for value in topic.sent for d in decode_deliveries(value)]
    assert [d.record for d in delivered] == records


def test_a_record_altered_inside_a_run_is_a_hole_and_the_rest_arrive() -> None:
    records = _records(5)
    wires: list[dict[str, Any]] = [r.to_wire() for r in records]
    wires[2]["checksum"] = "0" * 64
    delivered = decode_deliveries(json.dumps({"records": wires}).encode())
    assert [d.seq for d in delivered] == [1, 2, 3, 4, 5]
    assert [d.record is None for d in delivered] == [False, False, True, False, False]


def test_a_single_record_message_is_still_understood() -> None:
    [record] = _records(1)
    [delivery] = decode_deliveries(json.dumps(record.to_wire()).encode())
    assert delivery.record == record
    [garbage] = decode_deliveries(b"not json")
    assert garbage.record is None
