"""What every route needs: symbol routing, writers, leadership, order history, metrics."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar
from uuid import UUID

from application.leadership import Leadership
from application.read_confirmation import ReadConfirmation
from application.shard.app import Outcome, ShardApp
from application.views import FillView, OrderView
from application.wal.records import WalRecord
from application.wal.writer import (
    LeaseLapsedError,
    NotLeaderError,
    ShardWriter,
    WriterStoppedError,
)
from domain.commands import Command
from domain.errors import DomainError
from domain.values import Instrument
from infra.api.activity import ShardActivity
from infra.api.errors import ApiError
from infra.api.history import HistoryReader, merge_fills, merge_orders
from infra.api.keys import KeyStore
from infra.api.metrics import ApiMetrics
from infra.api.reads import WriterGateReads, stamp_read

log = logging.getLogger("exchange_dr.api")

T = TypeVar("T")
LagFn = Callable[[str], float | None]
"""Replication lag of a shard in milliseconds on this (standby) instance; None if unknown."""

RETRY_AFTER_S = 1
WARM_RETRY_MAX_S = 10.0  # an overlay build that failed (the store was down) retries this often
TRACKING_POLL_S = 0.1  # how often the read models' tracking rows are read to trim the overlays
LEADERSHIP_POLL_S = 0.05  # a command in flight notices a lost leadership this fast


class Facade:
    """The facade's view of the shards it serves; shared by every route through app.state."""

    def __init__(
        self,
        shards: Mapping[str, ShardWriter],
        leadership: Leadership,
        key_store: KeyStore,
        *,
        replica_lag_ms: LagFn | None = None,
        command_timeout_s: float = 10.0,
        history: HistoryReader | None = None,
        overlay_sync_records: int = 50_000,
        reads: ReadConfirmation | None = None,
    ) -> None:
        """`history`: the read models of the region's database (None: a witness, which serves
        no history); `overlay_sync_records`: see fill_overlays."""
        self.writers = dict(shards)
        self.shard_ids = list(self.writers)
        self.leadership = leadership
        # whether what a read shows can be taken back; without a node: the writers' gates
        self.reads: ReadConfirmation = WriterGateReads(self.writers) if reads is None else reads
        self.key_store = key_store
        self.replica_lag_ms = replica_lag_ms
        self.command_timeout_s = command_timeout_s
        self.metrics = ApiMetrics()
        self.instruments: dict[str, Instrument] = {}
        self.symbol_shard: dict[str, str] = {}
        self.activity: dict[str, ShardActivity] = {}
        self._pending: dict[str, dict[asyncio.Future[Any], float]] = {}
        self.history = history
        self.overlay_sync_records = overlay_sync_records
        # shards whose overlay is being built in the background, and the seq it is built up to
        self._warming: dict[str, int] = {}
        self._warm_stale: set[str] = set()
        self._tracked: dict[str, int] = {}  # the last tracking row seen, by shard
        self._poller: threading.Thread | None = None
        self._closed = threading.Event()
        self._watchdog: asyncio.Task[None] | None = None
        for shard_id, writer in self.writers.items():
            instruments = writer.app.instruments
            self.activity[shard_id] = ShardActivity(shard_id, instruments)
            writer.app.on_recovered = functools.partial(self._recovered, shard_id)
            self.metrics.history_overlay.labels(shard_id).set_function(
                functools.partial(self._overlay_entries, shard_id)
            )
            for instrument in instruments:
                self.instruments[instrument.symbol] = instrument
                self.symbol_shard[instrument.symbol] = shard_id

    # -- the overlay of unprojected history -------------------------------------------------

    def fill_overlays(self) -> None:
        """Index, for every shard, what its store holds after the read models' tracking row
        (a start): bounded by the projection's lag, not by the length of history. A tail of
        up to `overlay_sync_records` is indexed before this returns; a longer one in the
        background while commands are taken (listings answer 503 warming_up until it is
        done). Then keep trimming the overlays as the tracking rows move."""
        if self.history is not None:
            self._tracked.update(self.history.tracked())
        for shard_id, writer in self.writers.items():
            writer.query(functools.partial(self._fill, shard_id)).result()
        if self.history is not None and self._poller is None:
            self._poller = threading.Thread(
                target=self._follow_tracking, name="history-tracking", daemon=True
            )
            self._poller.start()

    def _fill(self, shard_id: str, app: ShardApp) -> None:
        """(writer thread) A new overlay of the shard from its tracking row, unless one is being
        built (its take-over indexes whatever happened since it began)."""
        if shard_id in self._warming:
            return
        if app.needs_recovery:
            app.recover()  # its hook may have begun one already
            if shard_id in self._warming:
                return
        floor = min(self._tracked.get(shard_id, 0), app.seq)
        if app.seq - floor <= self.overlay_sync_records:
            overlay = ShardActivity(shard_id, app.instruments, seq=floor)
            started = time.monotonic()
            records = overlay.index_records(
                app,
                _after(shard_id, floor, app.store.iter_records(shard_id, floor, upto_seq=app.seq)),
            )
            overlay.seq = max(overlay.seq, app.seq)  # indexed up to here (the last may be none)
            overlay.follow_open_orders(app)
            self.activity[shard_id] = overlay
            log.info(
                "history overlay shard=%s floor=%s seq=%s records=%s entries=%s seconds=%.2f",
                shard_id,
                floor,
                overlay.seq,
                records,
                overlay.size,
                time.monotonic() - started,
            )
            return
        log.warning(
            "history overlay shard=%s: %s records after the tracking row seq=%s; indexing them "
            "in the background, listings answer 503 warming_up meanwhile",
            shard_id,
            app.seq - floor,
            floor,
        )
        self.activity[shard_id] = ShardActivity(shard_id, app.instruments, seq=app.seq)
        self._warming[shard_id] = app.seq
        threading.Thread(
            target=self._warm,
            args=(shard_id, floor, app.seq),
            name=f"history-overlay-{shard_id}",
            daemon=True,
        ).start()

    @property
    def warming_up(self) -> bool:
        return bool(self._warming)

    def _overlay_entries(self, shard_id: str) -> int:
        return self.activity[shard_id].size

    @property
    def overlay_size(self) -> int:
        """Order views and fills held in memory over all shards (the unprojected tail)."""
        return sum(activity.size for activity in self.activity.values())

    def _warm(self, shard_id: str, floor: int, upto: int) -> None:
        writer = self.writers[shard_id]
        delay = 0.5
        while True:
            try:
                builder = ShardActivity(shard_id, writer.app.instruments, seq=floor)
                records = writer.app.store.iter_records(shard_id, floor, upto_seq=upto)
                builder.index_records(writer.app, _after(shard_id, floor, records))
                builder.seq = max(builder.seq, upto)
                again = writer.query(functools.partial(self._take_over, shard_id, builder)).result()
            except WriterStoppedError:
                return
            except Exception as exc:
                probe = writer.query(lambda _app: None)
                if probe.done() and isinstance(probe.exception(), WriterStoppedError):
                    return  # the facade is closing: its store may be gone already
                log.error("history overlay build failed shard=%s error=%s", shard_id, exc)
                time.sleep(delay)
                delay = min(WARM_RETRY_MAX_S, delay * 2)
                continue
            if again is None:
                return
            floor, upto = again  # records it read were set aside meanwhile: again, up to now

    def _take_over(
        self, shard_id: str, builder: ShardActivity, app: ShardApp
    ) -> tuple[int, int] | None:
        """(writer thread) The built overlay indexes what was committed since its seq and
        replaces the one commands fed meanwhile; or, if records it read are gone (this region
        rejoined and set them aside), the range to build again."""
        if app.needs_recovery:
            app.recover()
        if shard_id in self._warm_stale:
            self._warm_stale.discard(shard_id)
            self._warming[shard_id] = app.seq
            return min(self._tracked.get(shard_id, 0), app.seq), app.seq
        builder.index_records(app, app.store.iter_records(shard_id, builder.seq, upto_seq=app.seq))
        builder.seq = max(builder.seq, app.seq)
        builder.follow_open_orders(app)
        builder.trim(self._tracked.get(shard_id, 0))
        self.activity[shard_id] = builder
        del self._warming[shard_id]
        log.info("history overlay ready shard=%s seq=%s", shard_id, builder.seq)
        return None

    def _follow_tracking(self) -> None:
        """Trim each shard's overlay as its tracking row moves (every TRACKING_POLL_S)."""
        assert self.history is not None
        delay = TRACKING_POLL_S
        while not self._closed.wait(delay):
            try:
                tracked = self.history.tracked()
            except Exception as exc:
                log.warning("history tracking rows unreadable: %s: %s", type(exc).__name__, exc)
                delay = min(WARM_RETRY_MAX_S, delay * 2)
                continue
            delay = TRACKING_POLL_S
            for shard_id, seq in tracked.items():
                writer = self.writers.get(shard_id)
                if writer is None or seq <= self._tracked.get(shard_id, 0):
                    continue
                self._tracked[shard_id] = seq
                trimmed = writer.query(functools.partial(self._trim, shard_id, seq))
                if trimmed.done() and isinstance(trimmed.exception(), WriterStoppedError):
                    return  # the writers stopped: so does this

    def _trim(self, shard_id: str, seq: int, _app: ShardApp) -> None:
        """(writer thread) Drop from the overlay what the read models hold up to `seq`."""
        self.activity[shard_id].trim(seq)

    def close(self) -> None:
        """Stop following the tracking rows and release the history's connections."""
        self._closed.set()
        if self.history is not None:
            self.history.close()

    def index_of(self, shard_id: str) -> ShardActivity:
        """(writer thread) The shard's overlay for a listing; 503 while it is being built."""
        if shard_id in self._warming:
            raise self.warming_error(shard_id)
        return self.activity[shard_id]

    def warming_error(self, shard_id: str | None = None) -> ApiError:
        which = f"shard {shard_id}" if shard_id else "a shard"
        return ApiError(
            503,
            "warming_up",
            f"{which} is still indexing its unprojected history after a start; retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    def reindex(self, shard_id: str) -> None:
        """Index a shard again from its tracking row (this region stopped leading it: what
        commands fed the overlay is not what the new leader's records say)."""
        self.writers[shard_id].query(functools.partial(self._refill, shard_id))

    def _refill(self, shard_id: str, app: ShardApp) -> None:
        if shard_id not in self._warming:
            self._fill(shard_id, app)

    # -- history reads ------------------------------------------------------------------------

    async def _sql(self, read: Callable[[], T]) -> T:
        """A read of the read models on the history's own threads."""
        if self.history is None:
            raise ApiError(503, "unavailable", "this instance serves no history")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.history.pool, read)
        except Exception as exc:
            log.warning("history read failed: %s: %s", type(exc).__name__, exc)
            raise ApiError(
                503,
                "unavailable",
                "order history cannot be read right now; retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None

    async def order_view(self, order_id: UUID) -> OrderView | None:
        """An order by id, open or closed: from the overlay if it changed after the tracking
        row (read first), else from the read models."""
        for shard_id, activity in self.activity.items():
            if order_id in activity.orders:
                view = await self.query(
                    shard_id, functools.partial(self._overlay_order, shard_id, order_id)
                )
                if view is not None:
                    return view
        history = self.history
        found = None if history is None else await self._sql(lambda: history.order(order_id))
        if found is not None:
            view = found[0]
            if view.shard in self._warming:
                raise self.warming_error(view.shard)  # a newer view may still be on its way
            return view
        if self.warming_up:
            raise self.warming_error()  # an order may still be on its way into the overlay
        return None

    def _overlay_order(self, shard_id: str, order_id: UUID, _app: ShardApp) -> OrderView | None:
        return self.activity[shard_id].order(order_id)

    async def order_page(
        self,
        shard_id: str,
        account: str,
        *,
        symbol: str | None,
        status: str | None,
        after: int,
        limit: int,
    ) -> tuple[list[OrderView], int | None]:
        """A page of the account's orders on one shard placed after seq `after`."""
        overlay = await self.query(
            shard_id, lambda _app: self.index_of(shard_id).account_orders(account)
        )
        history = self.history
        assert history is not None
        sql = await self._sql(
            lambda: history.orders(
                shard_id,
                account,
                symbol=symbol,
                status=status,
                after=after,
                limit=limit,
                overlay=overlay,
            )
        )
        return merge_orders(sql, overlay, symbol=symbol, status=status, after=after, limit=limit)

    async def fill_page(
        self, shard_id: str, account: str, *, symbol: str | None, after: int, limit: int
    ) -> tuple[list[FillView], int | None]:
        """A page of the account's fills on one shard after position `after`."""
        overlay = await self.query(
            shard_id, lambda _app: self.index_of(shard_id).account_fills(account)
        )
        history = self.history
        assert history is not None
        sql = await self._sql(
            lambda: history.fills(shard_id, account, symbol=symbol, after=after, limit=limit + 1)
        )
        return merge_fills(sql, overlay, symbol=symbol, after=after, limit=limit)

    # -- routing ----------------------------------------------------------------------------

    def shard_of(self, symbol: str) -> str:
        shard = self.symbol_shard.get(symbol)
        if shard is None:
            raise ApiError(
                400, "unknown_symbol", f"symbol {symbol!r} is not traded here", field="symbol"
            )
        return shard

    def require_leader(self, shard_id: str) -> None:
        if self.leadership.is_leader(shard_id):
            return
        self.metrics.not_leader.labels(shard_id).inc()
        leader = self.leadership.leader_url(shard_id)
        raise ApiError(
            503,
            "not_leader",
            f"this instance does not lead shard {shard_id}"
            + (f"; send commands to {leader}" if leader else ""),
            leader=leader,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    # -- writer round trips -----------------------------------------------------------------

    async def submit(self, shard_id: str, command: Command, present: Callable[[Outcome], T]) -> T:
        """Run a command on its shard's writer; `present` runs on the writer after commit."""
        started = time.perf_counter()
        future: Future[T] = self.writers[shard_id].submit_presented(command, present)
        try:
            return await self._wait(future, shard_id, command=True)
        finally:
            self.metrics.command_ack.labels(shard_id, type(command).__name__).observe(
                time.perf_counter() - started
            )

    def _recovered(self, shard_id: str, seq: int) -> None:
        """The shard rebuilt its hot state up to `seq` (writer thread): the overlay drops what
        commands beyond it left there; if its journal does not reach back, it is filled again
        from the tracking row."""
        warm_upto = self._warming.get(shard_id)
        if warm_upto is not None and seq < warm_upto:
            self._warm_stale.add(shard_id)  # the build may have read records now set aside
        activity = self.activity[shard_id]
        if activity.seq <= seq or activity.rollback(seq):
            return
        if warm_upto is not None:
            # the overlay commands feed during a build is replaced by the built one anyway
            instruments = activity.instruments.values()
            self.activity[shard_id] = ShardActivity(shard_id, instruments, seq=seq)
            return
        log.warning(
            "history overlay shard=%s at seq=%s is beyond the recovered seq=%s and its journal "
            "does not reach back: indexing again from the tracking row",
            shard_id,
            activity.seq,
            seq,
        )
        self._fill(shard_id, self.writers[shard_id].app)

    async def query(
        self, shard_id: str, read: Callable[[ShardApp], T], *, barrier: bool = True
    ) -> T:
        """A read on the writer thread, between batches, of committed state only, shown once
        no failover can take it back (DESIGN.md invariant 11): the seq it reflects is taken
        on the writer thread with it, and the answer waits (at most the shard's sync timeout)
        until a majority of the replicas holds that seq. If none does in time, the strict
        policy refuses (503 unconfirmed: nothing is shown that may vanish); degrade and async
        answer and say so (X-Exdr-State: unconfirmed, infra/api/reads.py). Without `barrier`
        (operators' views) it never waits nor refuses, and only says which it is."""
        result, seq = await self._wait(
            self.writers[shard_id].query(functools.partial(_committed, read)), shard_id
        )
        confirmed = await self.reads.confirm(shard_id, seq, wait=barrier)
        stamp_read(shard_id, seq, confirmed)
        if not confirmed:
            refused = barrier and self.reads.refuses_unconfirmed(shard_id)
            self.metrics.unconfirmed_reads.labels(
                shard_id, "refused" if refused else "labelled"
            ).inc()
            if refused:
                raise ApiError(
                    503,
                    "unconfirmed",
                    f"shard {shard_id}: the state at seq {seq} is not yet held by a majority "
                    "of its replicas (a failover could take it back); retry shortly",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
        return result

    async def _until_done(self, future: Future[T], shard_id: str, while_leader: bool) -> T:
        """The future's result; for a command, given up (not_leader) as soon as this instance
        stops leading the shard: its outcome is then unknown, the client retries elsewhere
        with the same client_order_id, and an uncommitted or unreplicated write is set aside
        when this region rejoins. One watchdog per facade checks leadership and deadlines
        for every command in flight, rather than a timer per command."""
        if not while_leader:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.command_timeout_s)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        future.add_done_callback(functools.partial(_hand_over, loop, waiter))
        pending = self._pending.setdefault(shard_id, {})
        pending[waiter] = time.monotonic() + self.command_timeout_s
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = loop.create_task(self._watch())
        try:
            return await waiter
        finally:
            pending.pop(waiter, None)

    async def _watch(self) -> None:
        """Fail commands in flight on a shard this instance no longer leads, or past their
        deadline; ends when nothing is in flight (the next command starts it again)."""
        while any(self._pending.values()):
            await asyncio.sleep(LEADERSHIP_POLL_S)
            now = time.monotonic()
            for shard_id, pending in self._pending.items():
                if not pending:
                    continue
                leads = self.leadership.is_leader(shard_id)
                for waiter, deadline in list(pending.items()):
                    if waiter.done():
                        continue
                    if not leads:
                        waiter.set_exception(NotLeaderError(shard_id))
                    elif now > deadline:
                        waiter.set_exception(TimeoutError())

    async def _wait(self, future: Future[T], shard_id: str = "", *, command: bool = False) -> T:
        try:
            return await self._until_done(future, shard_id, command and bool(shard_id))
        except (DomainError, ApiError):
            raise
        except LeaseLapsedError:
            self.metrics.not_leader.labels(shard_id).inc()
            raise ApiError(
                503,
                "lease_lapsed",
                "this instance's leadership lease lapsed before the command was acknowledged; "
                "retry with the same client_order_id or deposit_id",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        except NotLeaderError:
            self.require_leader(shard_id)
            raise ApiError(
                503,
                "not_leader",
                "this instance does not lead the shard",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        except TimeoutError:
            raise ApiError(
                503,
                "timeout",
                "the shard did not answer in time; "
                "retry with the same client_order_id or deposit_id",
                headers={"Retry-After": "1"},
            ) from None
        except Exception as exc:
            log.warning("shard call failed: %s: %s", type(exc).__name__, exc)
            raise ApiError(
                503,
                "unavailable",
                "the shard could not commit; retry with the same client_order_id or deposit_id",
                headers={"Retry-After": "1"},
            ) from None

    # -- health -----------------------------------------------------------------------------

    def leads_all(self) -> bool:
        return all(self.leadership.is_leader(s) for s in self.shard_ids)

    def leads_any(self) -> bool:
        return any(self.leadership.is_leader(s) for s in self.shard_ids)

    def max_lag_ms(self) -> float | None:
        if self.replica_lag_ms is None:
            return None
        lags = [self.replica_lag_ms(s) for s in self.shard_ids]
        if any(lag is None for lag in lags):
            return None
        return max((lag for lag in lags if lag is not None), default=0.0)


def facade_of(state: Any) -> Facade:
    facade = state.facade
    assert isinstance(facade, Facade)
    return facade


def _hand_over(
    loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Any], done: Future[Any]
) -> None:
    """From the writer's thread: settle the waiter on its loop (unless that loop is gone, as
    asyncio.wrap_future also skips)."""
    if not loop.is_closed():
        loop.call_soon_threadsafe(_settle, waiter, done)


def _settle(waiter: asyncio.Future[Any], done: Future[Any]) -> None:
    """Copy a writer's outcome to the request's waiter, unless the watchdog settled it first
    (not_leader, timeout) or the request went away: the writer owns the command either way."""
    if waiter.done():
        return
    exc = done.exception()
    if exc is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(done.result())


def _after(shard_id: str, floor: int, records: Iterable[WalRecord]) -> Iterator[WalRecord]:
    """`records` from the live WAL after the tracking row, saying so if the first is not the
    next seq: the records between were archived before the read models had them (no projector
    was running), and their orders and fills are missing from history."""
    first = True
    for record in records:
        if first and record.seq > floor + 1:
            log.error(
                "history overlay shard=%s: records %s..%s are neither in the live WAL nor in "
                "the read models (tracking seq=%s): their orders and fills are not served",
                shard_id,
                floor + 1,
                record.seq - 1,
                floor,
            )
        first = False
        yield record


def _committed(read: Callable[[ShardApp], T], app: ShardApp) -> tuple[T, int]:
    """`read` of the hot state once no failed batch is left in it (a batch that did not land
    is taken out, by recovery from the store, which also takes it out of the history overlay,
    before anyone reads what it did), and the seq of the state it read."""
    if app.needs_recovery:
        app.recover()
    return read(app), app.seq
