"""The shard's single writer: commands queue, up to N commit in one transaction (group commit)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar, cast

from application.replication.sync_gate import ReplicationTimeoutError, SyncGate
from application.shard.app import CommandFailedError, Outcome, PreparedBatch, ShardApp
from application.wal.records import WalRecord
from domain.commands import Command

log = logging.getLogger("exchange_dr.writer")

_STOP = object()

T = TypeVar("T")
Presenter = Callable[[Outcome], Any]
_Item = tuple[Command | None, "Future[Any]", Callable[[Any], Any] | None]


class WriterStoppedError(Exception):
    """The writer no longer takes commands (stopped, or deposed)."""


class NotLeaderError(WriterStoppedError):
    """This instance does not lead the shard (any more): the command was not executed."""


class ShardWriter:
    """Runs a ShardApp's commands on one thread, batching whatever queued while it committed.

    A command is acknowledged (its future resolved) only after its batch committed. The batch
    closes when it holds `batch_max` commands or `batch_wait_s` after its first command arrived.
    While one batch commits (on the commit thread, I/O), the next is prepared in memory; a batch
    is handed to the store only after the one before it landed, and fails if that one failed.

    With `batch_wait_s = 0` (the default) a batch is whatever queued by the time the writer
    looks (the LMAX "smart batching"): a lone command goes at once, and under load batches grow
    by themselves while the commit before them is in flight. A wait only delays the command
    that opens a batch; the batches it would gather form anyway behind the commit in flight.
    """

    def __init__(
        self,
        app: ShardApp,
        *,
        batch_max: int = 100,
        batch_wait_s: float = 0.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.app = app
        self.batch_max = batch_max
        self.batch_wait_s = batch_wait_s
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name=f"wal-writer-{app.shard_id}", daemon=True
        )
        self._accepting = False
        self._on_batch = on_batch
        self._committer = ThreadPoolExecutor(1, thread_name_prefix=f"wal-commit-{app.shard_id}")
        self.gate: SyncGate | None = None
        self.guard: Callable[[], bool] | None = None  # False: refuse commands, not leader
        self.on_committed: Callable[[Sequence[WalRecord]], None] | None = None
        self._inflight: Future[bool] | None = None
        self.batches = 0
        self.commands = 0

    def start(self) -> ShardWriter:
        self.app.enable_key_filter()
        self._accepting = True
        self._thread.start()
        return self

    def submit(self, command: Command) -> Future[Outcome]:
        """Queue a command; the future resolves to its Outcome or raises its error."""
        return self.submit_presented(command, None)

    def submit_presented(self, command: Command, present: Presenter | None) -> Future[Any]:
        """Queue a command; `present(outcome)` runs on the writer thread right after the command
        executes, before its batch commits, so it sees the aggregates as that command left
        them; the future gets its result once the batch is committed (or its error)."""
        future: Future[Any] = Future()
        if not self._accepting:
            future.set_exception(WriterStoppedError(f"shard {self.app.shard_id} writer stopped"))
            return future
        self._queue.put((command, future, present))
        return future

    def query(self, read: Callable[[ShardApp], T]) -> Future[T]:
        """Run a read on the writer thread between batches: a consistent view of hot state."""
        future: Future[T] = Future()
        if not self._accepting:
            future.set_exception(WriterStoppedError(f"shard {self.app.shard_id} writer stopped"))
            return future
        self._queue.put((None, future, read))
        return future

    def execute(self, command: Command, timeout: float | None = 30.0) -> Outcome:
        """Submit and wait: raises the command's DomainError or failure."""
        return self.submit(command).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking commands, finish what is queued, then end the thread."""
        if not self._accepting:
            return
        self._accepting = False
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self.app.background_checkpoint is not None:
            self.app.background_checkpoint.wait(timeout)  # a stop keeps its checkpoints

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            deadline = time.monotonic() + self.batch_wait_s
            while len(batch) < self.batch_max:
                try:
                    remaining = deadline - time.monotonic()
                    nxt = (
                        self._queue.get_nowait()
                        if remaining <= 0
                        else self._queue.get(timeout=remaining)
                    )
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                batch.append(nxt)
            self._process(batch)
        self._settle_inflight()
        self._committer.shutdown(wait=True)

    def _process(self, batch: list[object]) -> None:
        commands: list[Command] = []
        futures: list[Future[Any]] = []
        presenters: list[Presenter | None] = []
        for item in batch:
            command, future, fn = cast(_Item, item)
            if not future.set_running_or_notify_cancel():
                continue
            if command is None:
                # a read sees committed state only: let the batch in flight land first
                self._dispatch(commands, futures, presenters)
                commands, futures, presenters = [], [], []
                self._settle_inflight()
                try:
                    assert fn is not None
                    future.set_result(fn(self.app))
                except Exception as exc:
                    future.set_exception(exc)
                continue
            commands.append(command)
            futures.append(future)
            presenters.append(fn)
        self._dispatch(commands, futures, presenters)

    def _dispatch(
        self,
        commands: list[Command],
        futures: list[Future[Any]],
        presenters: list[Presenter | None],
    ) -> None:
        """Prepare this batch in memory while the previous one commits, then hand it over."""
        if not commands:
            return
        if self.guard is not None and not self.guard():
            refusal = NotLeaderError(f"this instance does not lead shard {self.app.shard_id}")
            for future in futures:
                future.set_exception(refusal)
            return
        started = time.perf_counter()
        try:
            prepared = self.app.prepare(commands, presenters)
        except Exception as exc:  # recovery itself failed: the store is unreachable
            log.error("batch failed shard=%s error=%s", self.app.shard_id, exc)
            self._settle_inflight()
            for future in futures:
                future.set_exception(exc)
            return
        if not self._settle_inflight():
            # the batch it was built on did not land: neither may this one
            self.app.fail(prepared, CommandFailedError("the previous batch failed to commit"))
        self.batches += 1
        self.commands += len(commands)
        if prepared.failed:
            self._resolve(prepared, futures, started)
            return
        self._inflight = self._committer.submit(self._commit, prepared, futures, started)
        if self.app.checkpoint_due:
            # the checkpoint is of the state this batch leaves: once it is durable, before the
            # next batch changes it (one commit's wait, every checkpoint interval)
            self._settle_inflight()
            self.app.take_due_checkpoint()

    def _commit(self, prepared: PreparedBatch, futures: list[Future[Any]], started: float) -> bool:
        self.app.commit(prepared)
        if prepared.committed and prepared.records and self.on_committed is not None:
            try:
                self.on_committed(prepared.records)
            except Exception as exc:  # the relay catches up from the store on its own
                log.warning("on_committed hook failed shard=%s error=%s", self.app.shard_id, exc)
        self._resolve(prepared, futures, started)
        return not prepared.failed

    def _resolve(self, prepared: PreparedBatch, futures: list[Future[Any]], started: float) -> None:
        gate = self.gate
        if gate is None or prepared.failed or prepared.ack_seq == 0:
            self._settle(prepared, futures, started, acknowledged=True)
            return
        gate.release(
            prepared.ack_seq,
            lambda ok: self._settle(prepared, futures, started, acknowledged=ok),
        )

    def _settle(
        self,
        prepared: PreparedBatch,
        futures: list[Future[Any]],
        started: float,
        *,
        acknowledged: bool,
    ) -> None:
        if self._on_batch is not None:
            self._on_batch(len(futures), time.perf_counter() - started)
        refusal: Exception | None = None
        if not acknowledged:
            refusal = ReplicationTimeoutError(
                f"shard {self.app.shard_id}: the standby did not confirm seq {prepared.ack_seq} "
                "in time; the command is stored on the primary but NOT acknowledged "
                "(retry with the same client_order_id or deposit_id)"
            )
        for future, result in zip(futures, prepared.results, strict=True):
            if isinstance(result, Exception):
                future.set_exception(result)
            elif refusal is not None:
                future.set_exception(refusal)
            else:
                future.set_result(result)

    def _settle_inflight(self) -> bool:
        """Wait for the batch being committed; False if it failed."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return True
        try:
            return inflight.result()
        except Exception as exc:
            log.error("commit thread failed shard=%s error=%s", self.app.shard_id, exc)
            return False
