"""Alerts for refused replication messages, at most one per kind every few seconds.

Whoever can write to the broker can send a refused message a thousand times a second; each is
counted (replication_rejected_total), but the alert and its webhook fire once per shard, name
and reason in each interval, saying how many were folded into it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

AlertSink = Callable[[str, str, Mapping[str, Any]], None]

ALERT_EVERY_S = 5.0


class RejectionAlerts:
    """`(name, message, labels)` -> a critical alert, throttled per (name, shard, reason)."""

    def __init__(
        self,
        send: AlertSink,
        *,
        every_s: float = ALERT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self.every_s = every_s
        self._clock = clock
        self._last: dict[tuple[str, Any, Any], float] = {}
        self._folded: dict[tuple[str, Any, Any], int] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str, message: str, labels: Mapping[str, Any]) -> None:
        key = (name, labels.get("shard"), labels.get("reason"))
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.every_s:
                self._folded[key] = self._folded.get(key, 0) + 1
                return
            self._last[key] = now
            folded = self._folded.pop(key, 0)
        self._send(name, message, {**labels, "folded": folded})
