"""AlertSender: every alert logged at once, posted to the webhook from a thread of its own."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import pytest

from infra.metrics.alerts import AlertSender

URL = "http://alerts.invalid/hook"


def test_an_alert_is_logged_and_posted_as_json(caplog: pytest.LogCaptureFixture) -> None:
    posted: list[dict[str, object]] = []

    def hook(request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"] == "application/json"
        posted.append(json.loads(request.content))
        return httpx.Response(204)

    sender = AlertSender(URL, transport=httpx.MockTransport(hook))
    with caplog.at_level(logging.CRITICAL, logger="exchange_dr.alerts"):
        sender.send("critical", "FailoverCompleted", "shard s1: standby leads", {"shard": "s1"})
    assert sender.flush(5)
    sender.close()
    assert posted == [
        {
            "alert": "FailoverCompleted",
            "severity": "critical",
            "message": "shard s1: standby leads",
            "shard": "s1",
        }
    ]
    assert sender.sent == 1
    assert "ALERT " in caplog.text and '"alert": "FailoverCompleted"' in caplog.text


def test_a_hanging_webhook_never_blocks_the_caller() -> None:
    release = threading.Event()

    def hook(request: httpx.Request) -> httpx.Response:
        release.wait(5)
        return httpx.Response(200)

    sender = AlertSender(URL, transport=httpx.MockTransport(hook))
    began = time.monotonic()
    for n in range(20):
        sender.send("critical", "ReplicationDegraded", f"alert {n}", {"shard": "s1"})
    assert time.monotonic() - began < 0.5
    assert not sender.flush(0.05)  # still held by the webhook
    release.set()
    assert sender.flush(5)
    sender.close()
    assert sender.sent == 20


def test_a_failing_webhook_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    sender = AlertSender(URL, transport=httpx.MockTransport(lambda _: httpx.Response(500)))
    with caplog.at_level(logging.WARNING, logger="exchange_dr.alerts"):
        sender.send("warning", "LeaderStopped", "shard s1: leader stopped")
        assert sender.flush(5)
    sender.close()
    assert sender.failed == 1 and sender.sent == 0
    assert "alert webhook failed" in caplog.text


def test_without_a_webhook_alerts_are_only_logged() -> None:
    sender = AlertSender(None)
    sender.send("critical", "WALQuarantined", "shard s1: 3 records set aside")
    assert sender.flush(0) and sender.sent == 0
    sender.close()
