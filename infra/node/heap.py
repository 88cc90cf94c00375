"""The cyclic garbage collector, tuned for a process that holds a large, growing hot state.

With CPython's defaults (a young collection every 700 net allocations, a full one whenever the
long-lived objects grew by a quarter) a node under 1,000 orders/s spent about 15% of its time
in the collector, with full collections of 100 ms and more that stop every thread: each one
walks the whole order book and every aggregate, and those only grow. Nearly all our garbage is
freed by reference counting; the collector is there for the rare cycle.

So, as large Python services do (Instagram's gc.freeze): young collections every 20,000 net
allocations (a few per second under load instead of hundreds), and whatever survived a full
collection is frozen (moved out of the collector's generations), so the next full collection
walks only what was created since. Recovery freezes the state it builds too
(application/shard/recovery.py). The trade: a cycle formed later among frozen objects is never
collected; the state's objects do not form such cycles, and a restart starts clean.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

log = logging.getLogger("exchange_dr.heap")

YOUNG_THRESHOLD = 20_000


class HeapPolicy:
    """Installs the thresholds; `settle()` (called now and then, any thread) freezes what the
    last full collection kept."""

    def __init__(self, young: int = YOUNG_THRESHOLD) -> None:
        self.young = young
        self.full_collections = 0
        self._frozen_after = 0

    def install(self) -> None:
        gc.set_threshold(self.young, 20, 100)
        gc.callbacks.append(self._observe)

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info.get("generation") == 2:
            self.full_collections += 1

    def settle(self) -> bool:
        """Freeze the survivors of a full collection that ran since the last call."""
        if self.full_collections == self._frozen_after:
            return False
        self._frozen_after = self.full_collections
        gc.freeze()
        log.info("heap frozen after a full collection: %s objects", gc.get_freeze_count())
        return True
