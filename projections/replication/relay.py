"""Relay (outbox): publish a shard's committed WAL records to Kafka, in seq order, at least once.

Records reach the relay two ways: handed over by the writer right after their commit (no
polling delay), or read from the store from the relay's tracked position (after a restart, a
broker loss, or whenever the hand-over skipped ahead). Only committed records exist in either
place, so nothing uncommitted is ever published.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import orjson

from application.ports import WalStore
from application.wal.records import WalRecord

log = logging.getLogger("exchange_dr.relay")


class Relay:
    """One shard's publisher. `offer()` is thread-safe; `run()` is the asyncio loop."""

    def __init__(
        self,
        shard_id: str,
        store: WalStore,
        topic: Any,
        *,
        page: int = 500,
        save_every_s: float = 0.2,
        idle_wait_s: float = 0.05,
        per_message: int = 100,
        linger_s: float = 0.0,
    ) -> None:
        self.shard_id = shard_id
        self.store = store
        self.topic = topic
        self.page = page
        self.save_every_s = save_every_s
        self.idle_wait_s = idle_wait_s
        self.per_message = per_message
        self.linger_s = linger_s
        self.position = 0
        self.published = 0
        self._offered: deque[WalRecord] = deque()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._wake_pending = False
        self.tamper_seqs: set[int] = set()

    def offer(self, records: Sequence[WalRecord]) -> None:
        """Hand over just-committed records (called from the writer's commit thread)."""
        self._offered.extend(records)
        loop = self._loop
        if loop is not None and not self._wake_pending:
            # one wake-up of the loop however many commits come before it runs
            self._wake_pending = True
            loop.call_soon_threadsafe(self._woken)

    def _woken(self) -> None:
        self._wake_pending = False
        if self._wake is not None:
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            try:
                self.position = await asyncio.to_thread(self.store.relay_position, self.shard_id)
                break
            except Exception as exc:
                log.warning("relay cannot read its position shard=%s error=%s", self.shard_id, exc)
                await asyncio.sleep(0.5)
        log.info("relay started shard=%s from seq=%s", self.shard_id, self.position)
        saved_at, saved = time.monotonic(), self.position
        while not self._stopping:
            try:
                saved_at, saved = await self._round(saved_at, saved)
            except Exception as exc:  # the store or the broker is away: retry, never give up
                log.warning(
                    "relay round failed shard=%s seq=%s error=%s", self.shard_id, self.position, exc
                )
                await asyncio.sleep(0.2)
        if self.position != saved:
            await asyncio.to_thread(self.store.save_relay_position, self.shard_id, self.position)

    async def _round(self, saved_at: float, saved: int) -> tuple[float, int]:
        assert self._wake is not None
        records = self._take_offered()
        if not records:
            records = list(
                await asyncio.to_thread(
                    self.store.read_records, self.shard_id, self.position, self.page
                )
            )
        if records:
            await self._publish(records)
            if self.linger_s:
                # what commits meanwhile goes in the next round's messages: fewer, fuller
                # messages for the producer, the broker and every consumer
                await asyncio.sleep(self.linger_s)
        else:
            self._wake.clear()
            if not self._offered:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.idle_wait_s)
        if self.position != saved and time.monotonic() - saved_at >= self.save_every_s:
            await asyncio.to_thread(self.store.save_relay_position, self.shard_id, self.position)
            saved_at, saved = time.monotonic(), self.position
        return saved_at, saved

    def encode_run(self, records: Sequence[WalRecord]) -> bytes:
        return encode_run(records, self.tamper_seqs)

    def _take_offered(self) -> list[WalRecord]:
        """Offered records that continue the published sequence; anything older is dropped."""
        taken: list[WalRecord] = []
        expected = self.position + 1
        while self._offered:
            head = self._offered[0]
            if head.seq < expected:
                self._offered.popleft()
                continue
            if head.seq != expected:
                break  # a hole: the store fills it on this round, the offer waits
            taken.append(self._offered.popleft())
            expected += 1
            if len(taken) >= self.page:
                break
        return taken

    async def _publish(self, records: Sequence[WalRecord]) -> None:
        """Records travel in runs of up to `per_message`, one Kafka message each: the broker,
        the producer and the standby's consumer then pay per run, not per record."""
        key = self.shard_id.encode()
        pending = []
        for start in range(0, len(records), self.per_message):
            value = self.encode_run(records[start : start + self.per_message])
            pending.append(await self.topic.send(key=key, value=value))
        await asyncio.gather(*pending)  # delivered to the broker before the position moves
        self.position = records[-1].seq
        self.published += len(records)


def encode_run(records: Sequence[WalRecord], tamper: set[int]) -> bytes:
    """The wire form of a run of records, as the broker and the peer link carry it.

    `tamper` is fault injection for drills: the seqs in it are altered in transit, once each
    (every path has its own set, so every path's copy is altered)."""
    run = []
    for record in records:
        wire = record.to_wire()
        if tamper and record.seq in tamper:
            tamper.discard(record.seq)
            payload = bytearray(base64.b64decode(wire["payload"]))
            payload[-1] ^= 0x01
            wire["payload"] = base64.b64encode(bytes(payload)).decode()
            log.warning("fault injected: tampered shard=%s seq=%s", record.shard_id, record.seq)
        run.append(wire)
    return orjson.dumps({"records": run})
