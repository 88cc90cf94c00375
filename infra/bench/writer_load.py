"""Drive a shard writer with a bounded number of commands in flight, timing every ack."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field

from application.shard.app import Outcome
from application.wal.writer import ShardWriter
from domain.commands import Command
from domain.errors import DomainError


@dataclass
class LoadStats:
    """Counts and ack latencies (seconds) of one load run."""

    submitted: int = 0
    acked: int = 0
    domain_errors: int = 0
    failures: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def percentile_ms(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[index] * 1000


def drive(
    writer: ShardWriter,
    commands: Iterable[Command],
    *,
    in_flight: int = 256,
    on_done: Callable[[int], None] | None = None,
) -> LoadStats:
    """Submit every command, keeping at most `in_flight` unacknowledged; wait for all."""
    stats = LoadStats()
    slots = threading.Semaphore(in_flight)
    lock = threading.Lock()
    finished = threading.Event()
    outstanding = [0]
    closed = [False]

    def settle(started: float, future: Future[Outcome]) -> None:
        elapsed = time.perf_counter() - started
        exc = future.exception()
        with lock:
            if exc is None:
                stats.acked += 1
                stats.latencies.append(elapsed)
            elif isinstance(exc, DomainError):
                stats.domain_errors += 1
            else:
                stats.failures += 1
            outstanding[0] -= 1
            done = stats.acked + stats.domain_errors + stats.failures
            if closed[0] and outstanding[0] == 0:
                finished.set()
        slots.release()
        if on_done is not None:
            on_done(done)

    started_all = time.perf_counter()
    for command in commands:
        slots.acquire()
        with lock:
            outstanding[0] += 1
            stats.submitted += 1
        started = time.perf_counter()
        writer.submit(command).add_done_callback(functools.partial(settle, started))
    with lock:
        closed[0] = True
        if outstanding[0] == 0:
            finished.set()
    finished.wait()
    stats.seconds = time.perf_counter() - started_all
    return stats
