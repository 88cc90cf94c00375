"""A progress bar on stderr for long operations; silent when stderr is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`Progress("replay", total)`; call `update(done)`; `close()` prints the final line."""

    def __init__(
        self, label: str, total: int, *, stream: TextIO | None = None, force: bool = False
    ) -> None:
        self.label = label
        self.total = max(total, 0)
        self.stream = stream or sys.stderr
        self.enabled = force or self.stream.isatty()
        self.started = time.perf_counter()
        self._last_draw = 0.0
        self.done = 0

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        now = time.perf_counter()
        if self.enabled and (now - self._last_draw > 0.1 or done >= self.total):
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        width = 30
        fraction = 1.0 if self.total == 0 else min(self.done / self.total, 1.0)
        filled = int(width * fraction)
        rate = self.done / max(now - self.started, 1e-9)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(
            f"\r{self.label:<12} [{bar}] {self.done:>10,}/{self.total:,} {rate:>10,.0f}/s"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
