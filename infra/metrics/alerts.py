"""Alerts: one structured log line each, and a JSON POST to the webhook when one is configured
(`Settings.alert_webhook`, EXDR_ALERT_WEBHOOK).

Every alert of a node goes through its AlertSender: the failover controller's, the sync gate's
degrade (`SyncGate.on_degrade`) and the replicator's corrupt record (`Replicator.alert`), the
last two through callbacks, so application and projections know nothing of webhooks.

`AlertSender.send` never waits on the network: it logs, then queues the alert for a thread of
its own that posts it (httpx, 2 s timeout, best effort). Callers are event loops (the failover
controller, the sync gate's expiry task) and the writer thread, none of which may stall on a
slow webhook. Prometheus' rules (monitoring/alerts.yml) alert on the metrics independently.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx

log = logging.getLogger("exchange_dr.alerts")

MAX_PENDING = 1000  # alerts waiting for the webhook; beyond that they are logged only


class AlertSender:
    """Sends every alert of one process: log line at once, webhook from a background thread."""

    def __init__(
        self,
        webhook_url: str | None,
        *,
        timeout_s: float = 2.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.webhook_url = webhook_url
        self.timeout_s = timeout_s
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._transport = transport
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(MAX_PENDING)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def send(
        self, severity: str, name: str, message: str, labels: Mapping[str, Any] | None = None
    ) -> None:
        """Log the alert (critical, one JSON object) and queue it for the webhook (any thread)."""
        line = {"alert": name, "severity": severity, "message": message, **(labels or {})}
        log.critical("ALERT %s", json.dumps(line, sort_keys=True, default=str))
        if not self.webhook_url:
            return
        self._start()
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1
            log.warning("alert webhook backlog full: %s not posted", name)

    # the ports of the inner layers, which know nothing of webhooks

    def replication_degraded(self, shard_id: str, message: str) -> None:
        """SyncGate's `on_degrade`: sync replication acknowledges asynchronously for now."""
        self.send("critical", "SyncReplicationDegraded", message, {"shard": shard_id})

    def no_majority(self, shard_id: str, message: str) -> None:
        """SyncGate's `on_no_majority`: strict sync replication refuses commands for now."""
        self.send("critical", "ReplicationNoMajority", message, {"shard": shard_id})

    def critical(self, name: str, message: str, labels: Mapping[str, Any]) -> None:
        """Replicator's `alert` (e.g. WALRecordCorrupt)."""
        self.send("critical", name, message, labels)

    def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait until every queued alert was posted (or failed); False if time ran out."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout_s: float = 2.0) -> None:
        """Post what is queued (within `timeout_s`), then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self.flush(timeout_s)
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            return  # the thread is a daemon: it ends with the process
        thread.join(timeout_s)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s, transport=self._transport) as client:
            while True:
                line = self._queue.get()
                try:
                    if line is None:
                        return
                    self._post(client, line)
                finally:
                    self._queue.task_done()

    def _post(self, client: httpx.Client, line: dict[str, Any]) -> None:
        assert self.webhook_url is not None
        try:
            response = client.post(
                self.webhook_url,
                content=json.dumps(line, default=str).encode(),
                headers={"content-type": "application/json"},
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self.failed += 1
            log.warning("alert webhook failed: %s", exc)
        else:
            self.sent += 1
