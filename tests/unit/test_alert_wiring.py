"""The sync gate's degrade alert and the replicator's corrupt-record alert reach the webhook,
as every alert does: the node wires their callbacks to its AlertSender."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, cast

import httpx

from application.shard.app import ShardApp
from application.wal.records import WalRecord
from infra.metrics.alerts import AlertSender
from infra.node.wiring import make_gate, make_replicator
from infra.settings import Settings
from projections.replication.relay import encode_run
from tests.unit.wal_records import sealed_records

SHARD = "shard-1"


def _sender() -> tuple[AlertSender, list[dict[str, Any]]]:
    posted: list[dict[str, Any]] = []

    def hook(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(204)

    return AlertSender("http://alerts.invalid/hook", transport=httpx.MockTransport(hook)), posted


class _App:
    """The part of ShardApp a Replicator uses; its store holds the good copies."""

    def __init__(self, records: list[WalRecord]) -> None:
        self.shard_id = SHARD
        self.seq = 0
        self.store = self
        self.records = records

    def append_replicated(self, records: Sequence[WalRecord]) -> int:
        self.seq = records[-1].seq
        return self.seq

    def read_records(self, shard_id: str, after_seq: int, limit: int) -> list[WalRecord]:
        return [r for r in self.records if r.seq > after_seq][:limit]


def test_the_sync_gates_degrade_alert_reaches_the_webhook() -> None:
    sender, posted = _sender()
    settings = Settings.from_env({"EXDR_SYNC_POLICY": "degrade", "EXDR_SYNC_TIMEOUT_MS": "1"})
    gate = make_gate(settings, SHARD, sender)
    outcomes: list[bool] = []
    gate.release(5, outcomes.append)
    time.sleep(0.01)
    gate.tick()
    assert outcomes == [True] and gate.degraded
    assert sender.flush(5)
    sender.close()
    assert [(a["alert"], a["severity"], a["shard"]) for a in posted] == [
        ("SyncReplicationDegraded", "critical", SHARD)
    ]
    assert "degraded to ASYNC" in posted[0]["message"]


def test_the_replicators_corrupt_record_alert_reaches_the_webhook() -> None:
    sender, posted = _sender()
    records = sealed_records(4)
    app = _App(records)
    replicator = make_replicator(Settings.from_env({}), cast(ShardApp, app), sender)
    assert replicator.apply_wire([encode_run(records, {2})]) == 4  # healed from the store
    assert sender.flush(5)
    sender.close()
    assert [(a["alert"], a["shard"], a["seq"]) for a in posted] == [("WALRecordCorrupt", SHARD, 2)]
