"""The writer takes what queued as one batch and never waits for more than that."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, cast

from application.shard.app import PreparedBatch, ShardApp
from application.wal.writer import ShardWriter
from domain.commands import Command

WAIT_S = 5.0  # far longer than any step here may take


class SlowStore:
    """A ShardApp stand-in: records how commands were batched; a commit can be held."""

    shard_id = "shard-1"
    background_checkpoint = None
    checkpoint_due = False

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.committing = threading.Event()

    def enable_key_filter(self) -> None:
        pass

    def prepare(self, commands: Sequence[Command], presenters: Any = None) -> PreparedBatch:
        self.batches.append([cast(str, c) for c in commands])
        return PreparedBatch(results=list(commands), first_seq=len(self.batches))

    def commit(self, batch: PreparedBatch) -> None:
        self.committing.set()
        assert self.hold.wait(WAIT_S)
        batch.committed = True

    def fail(self, batch: PreparedBatch, exc: BaseException) -> None:
        batch.failed = True


def _writer(store: SlowStore) -> ShardWriter:
    return ShardWriter(cast(ShardApp, store)).start()


def _submit(writer: ShardWriter, name: str) -> Future[Any]:
    return writer.submit_presented(cast(Command, name), None)


def test_a_lone_command_is_a_batch_of_its_own() -> None:
    store = SlowStore()
    writer = _writer(store)
    try:
        assert _submit(writer, "a").result(WAIT_S / 2) == "a"
        assert _submit(writer, "b").result(WAIT_S / 2) == "b"
    finally:
        writer.stop()
    assert store.batches == [["a"], ["b"]]


def test_what_queues_behind_a_commit_goes_as_one_batch() -> None:
    store = SlowStore()
    store.hold.clear()
    writer = _writer(store)
    try:
        first = _submit(writer, "a")
        assert store.committing.wait(WAIT_S / 2)  # "a" is committing, held
        second = _submit(writer, "b")
        _wait_for(lambda: len(store.batches) == 2)  # "b" prepared, waiting for "a" to land
        rest = [_submit(writer, c) for c in ("c", "d", "e")]
        store.hold.set()
        assert [f.result(WAIT_S / 2) for f in (first, second, *rest)] == list("abcde")
    finally:
        writer.stop()
    assert store.batches == [["a"], ["b"], ["c", "d", "e"]]


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S / 2
    while not condition():
        assert time.monotonic() < deadline, "the writer did not get there"
        time.sleep(0.001)
