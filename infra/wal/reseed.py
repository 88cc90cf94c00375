"""A standby's re-seed from its leader's checkpoint and archive (application/wal/reseed.py
decides; this reads the leader's store and archive and installs what it verified).

What the standby's store holds afterwards, in one transaction:
- wal_archive_segments: the leader's manifest rows up to its archived seq, `deleted`, naming
  copies of the leader's segment files in this region's own archive (byte for byte: the same
  SHA-256); its own older manifest rows are replaced. Records before the checkpoint are held in
  this archive only, like any archived range: replay from scratch reads them, the archiver
  goes on after them.
- wal_archived_keys: the idempotency keys of every archived record.
- wal_records: its own records up to the archived seq are gone (they are in the segments, the
  seam checked), the leader's records after it up to the checkpoint are stored.
- the aggregate events of the records it lacked (an order closed while it was away is found).
- the leader's checkpoint, and the head at the checkpoint's seq.
A failure anywhere before the commit changes nothing but files no manifest row names.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from eventsourcing.persistence import StoredEvent

from application.recovery.replay import chain_start
from application.shard.app import ShardApp
from application.wal.auth import ReplicationKeys
from application.wal.chain import ChainCursor
from application.wal.records import WALError, WalRecord
from application.wal.reseed import ReseedAction, ReseedPlan, plan_reseed
from infra.wal.archive import Segment, SegmentArchive
from infra.wal.pg_wal import copy_events, copy_records

log = logging.getLogger("exchange_dr.reseed")

AlertFn = Callable[[str, str, str, Mapping[str, Any]], None]  # severity, name, message, labels
REFUSED_ALERT_EVERY_S = 300.0  # a refusal or failure that lasts is alerted again this often
RECHECK_S = 10.0  # a refused or failed re-seed is planned again (files listed) this often


class ReseedError(WALError):
    """A re-seed that stopped before installing anything: what did not verify, and where."""


class _Follower(Protocol):
    app: ShardApp
    primary: Any
    keys: ReplicationKeys | None


@dataclass(frozen=True, slots=True)
class ReseedResult:
    checkpoint_seq: int
    archived_to: int
    segments: int
    records: int  # records the standby lacked, now in its archive or live table
    seconds: float


class StandbyReseed:
    """The replicator's hook (Replicator.reseed): asked on each catch-up while the standby is
    behind; returns the plan it acted on."""

    def __init__(
        self,
        region: str,
        alert: AlertFn | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.region = region
        self.alert = alert
        self._clock = clock
        self._refused_at: dict[str, tuple[str, float]] = {}  # shard -> (reason, when alerted)
        # shard -> (refusal, since when, the leader's store it was about)
        self._held: dict[str, tuple[ReseedPlan, float, Any]] = {}
        self.last_result: ReseedResult | None = None

    def __call__(self, follower: _Follower) -> ReseedPlan:
        app, primary = follower.app, follower.primary
        shard = app.shard_id
        archived_seq = getattr(primary, "archived_seq", None)
        if archived_seq is None or primary is app.store:
            return plan_reseed(
                applied_seq=app.seq, leader_archived_seq=0, leader_checkpoint_seqs=()
            )
        leader_archived = int(archived_seq(shard))
        if app.seq >= leader_archived:  # the common case: one query, nothing more
            return plan_reseed(
                applied_seq=app.seq,
                leader_archived_seq=leader_archived,
                leader_checkpoint_seqs=(),
            )
        held = self._held.get(shard)
        if (
            held is not None
            and held[2] is primary
            and self._clock() - held[1] < RECHECK_S
            and (held[0].from_seq, held[0].archived_to) == (app.seq + 1, leader_archived)
        ):
            return held[0]  # no listing of the leader's archive every half second
        segments = primary.archived_segments(shard)
        archive: SegmentArchive | None = getattr(primary, "archive", None)
        unreadable = [s.file for s in segments if archive is None or not archive.exists(s)]
        plan = plan_reseed(
            applied_seq=app.seq,
            leader_archived_seq=leader_archived,
            leader_checkpoint_seqs=primary.checkpoint_seqs(shard),
            unreadable=unreadable,
            archive_url="" if archive is None else archive.url,
        )
        if plan.action is ReseedAction.REFUSE:
            self._refused(shard, plan, "StandbyReseedBlocked", primary)
            return plan
        self._held.pop(shard, None)
        self._refused_at.pop(shard, None)
        labels = self._labels(shard, plan)
        message = f"standby of shard {shard} in region {self.region} re-seeds: {plan.reason}"
        log.warning("standby reseeding %s", _kv(labels))
        if self.alert is not None:
            self.alert("warning", "StandbyReseeding", message, labels)
        try:
            result = reseed(app, primary, plan, segments, keys=follower.keys)
        except Exception as exc:
            # nothing was installed; held as a refusal (no error loop), planned again later
            failed = dataclasses.replace(
                plan,
                action=ReseedAction.REFUSE,
                reason=f"re-seed failed, nothing installed, retried in {RECHECK_S:g}s: {exc}",
            )
            self._refused(shard, failed, "StandbyReseedFailed", primary)
            return failed
        self.last_result = result
        log.info(
            "standby reseeded %s segments=%s records=%s seconds=%.3f",
            _kv(labels),
            result.segments,
            result.records,
            result.seconds,
        )
        return plan

    def _labels(self, shard: str, plan: ReseedPlan) -> dict[str, Any]:
        return {
            "shard": shard,
            "region": self.region,
            "from_seq": plan.from_seq,
            "to_seq": plan.archived_to,
            "checkpoint_seq": "" if plan.checkpoint_seq is None else plan.checkpoint_seq,
        }

    def _refused(self, shard: str, plan: ReseedPlan, alert: str, primary: Any) -> None:
        """Held for RECHECK_S; logged and alerted when the reason changes, and again every few
        minutes while it lasts."""
        now = self._clock()
        self._held[shard] = (plan, now, primary)
        last = self._refused_at.get(shard)
        if last is not None and last[0] == plan.reason and now - last[1] < REFUSED_ALERT_EVERY_S:
            return
        self._refused_at[shard] = (plan.reason, now)
        labels = self._labels(shard, plan)
        message = f"standby of shard {shard} in region {self.region} cannot catch up: {plan.reason}"
        log.critical("standby reseed refused %s reason=%r", _kv(labels), plan.reason)
        if self.alert is not None:
            self.alert("critical", alert, message, labels)


def _kv(labels: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in labels.items())


def reseed(
    app: ShardApp,
    primary: Any,
    plan: ReseedPlan,
    segments: Iterable[Segment],
    *,
    keys: ReplicationKeys | None = None,
) -> ReseedResult:
    """Verify and install `plan` on the standby `app` from the leader's store `primary`.

    Streams: one segment's rows and one page of live records at a time, into one transaction
    on the standby's store that commits only once everything verified."""
    if plan.action is not ReseedAction.RESEED or plan.checkpoint_seq is None:
        raise ValueError(f"not a re-seed: {plan.reason}")
    started = time.perf_counter()
    shard = app.shard_id
    store: Any = app.store  # a PostgresWalRecorder: its datastore and events table
    own: SegmentArchive | None = getattr(store, "archive", None)
    leader: SegmentArchive | None = getattr(primary, "archive", None)
    if own is None or leader is None:
        raise ReseedError(f"shard {shard}: re-seed needs this region's and the leader's archive")
    applied = app.seq
    held = [s for s in segments if s.last_seq <= plan.archived_to]
    expected = 1
    for segment in held:
        if segment.first_seq != expected:
            raise ReseedError(
                f"shard {shard}: the leader's archive manifest has no segment starting at "
                f"{expected} (next: {segment.file})"
            )
        expected = segment.last_seq + 1
    if expected - 1 != plan.archived_to:
        raise ReseedError(f"shard {shard}: the leader's archive ends at {expected - 1}")
    checkpoint = primary.latest_checkpoint(shard, at_or_before=plan.checkpoint_seq)
    if checkpoint is None or checkpoint.seq != plan.checkpoint_seq:
        raise ReseedError(
            f"shard {shard}: the leader's checkpoint at {plan.checkpoint_seq} is gone (pruned "
            "since): the next catch-up plans again"
        )
    app.restore_checkpoint(checkpoint)  # its checksum and its state decode, before anything
    own_last = _checksum_at(store, shard, applied)
    legacy = chain_start(primary, shard)
    chain = ChainCursor(shard, legacy_upto=legacy)
    head_epoch = 0
    with store.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
        _lock_head(curs, shard, applied)
        curs.execute(
            "DELETE FROM wal_archive_segments WHERE shard_id = %s "
            "RETURNING shard_id, first_seq, last_seq, file",
            (shard,),
        )
        replaced = [_row_segment(row) for row in curs.fetchall()]
        curs.execute("CREATE TEMP TABLE reseed_keys (command_key text, seq int8) ON COMMIT DROP")
        for number, segment in enumerate(held, 1):
            data, rows = leader.read_checked(segment)  # file hash, every record, manifest row
            archived_keys: list[tuple[str, int]] = []
            for row in rows:
                seq, key, checksum, prev, mac = row[0], row[3], row[6], row[7], row[8]
                _verify_link(chain, keys, seq, prev, checksum, mac, legacy)
                if seq == applied and checksum != own_last:
                    raise ReseedError(
                        f"shard {shard}: this standby's record {seq} is not the leader's "
                        "(diverged history): not re-seeded over it"
                    )
                if key is not None:
                    archived_keys.append((key, seq))
                head_epoch = row[1]
            leader.forget()
            copy = own.store(
                shard,
                segment.first_seq,
                segment.last_seq,
                data,
                segment.first_checksum,
                segment.last_checksum,
            )
            if copy.checksum != segment.checksum:
                raise ReseedError(f"shard {shard}: the copy of {segment.file} differs")
            _add_segment(curs, copy, archived_keys)
            log.info(
                "reseed copied shard=%s segment=%s/%s file=%s records=%s",
                shard,
                number,
                len(held),
                segment.file,
                segment.records,
            )
        curs.execute(
            "INSERT INTO wal_archived_keys (shard_id, command_key, seq) "
            "SELECT %s, command_key, seq FROM reseed_keys ON CONFLICT DO NOTHING",
            (shard,),
        )
        curs.execute(
            "DELETE FROM wal_records WHERE shard_id = %s AND seq <= %s", (shard, plan.archived_to)
        )
        # as the archiver does: an archived record's events leave the live tables with it (the
        # leader's were deleted when it archived them; none of the copied range is added)
        curs.execute(
            f"DELETE FROM {store.events_table_name} WHERE shard_id = %s AND seq <= %s",
            (shard, plan.archived_to),
        )
        last = plan.archived_to
        page: list[WalRecord] = []
        for record in primary.iter_records(shard, plan.archived_to, upto_seq=checkpoint.seq):
            _verify_link(
                chain, keys, record.seq, record.prev_checksum, record.checksum, record.mac, legacy
            )
            page.append(record)
            last, head_epoch = record.seq, record.epoch
            if len(page) >= 2000:
                _add_records(curs, page, store.events_table_name)
                page = []
        _add_records(curs, page, store.events_table_name)
        if last != checkpoint.seq:
            raise ReseedError(
                f"shard {shard}: the leader's records end at {last}, before its checkpoint "
                f"at {checkpoint.seq}"
            )
        if checkpoint.epoch > head_epoch:
            raise ReseedError(
                f"shard {shard}: the leader's checkpoint at {checkpoint.seq} is of epoch "
                f"{checkpoint.epoch}, its record of epoch {head_epoch}"
            )
        _install_head(curs, checkpoint, head_epoch, legacy)
    kept = {segment.file for segment in held}
    for segment in replaced:  # this region's own older files no manifest row names any more
        if segment.file not in kept:
            own.delete(segment)
    app.recover()
    return ReseedResult(
        checkpoint.seq,
        plan.archived_to,
        len(held),
        checkpoint.seq - applied,
        time.perf_counter() - started,
    )


def _row_segment(row: Any) -> Segment:
    if not isinstance(row, dict):
        row = dict(zip(("shard_id", "first_seq", "last_seq", "file"), row, strict=True))
    return Segment(
        row["shard_id"], int(row["first_seq"]), int(row["last_seq"]), row["file"], 0, "", "", ""
    )


def _lock_head(curs: Any, shard: str, applied: int) -> None:
    """This region's archiver for the shard waits (its lock, infra/wal/archiver.py), and so does
    any writer of the head; the head must still be where the plan found it."""
    curs.execute("SELECT pg_advisory_xact_lock(hashtext('wal-archive:' || %s))", (shard,))
    curs.execute("SELECT seq FROM wal_heads WHERE shard_id = %s FOR UPDATE", (shard,))
    row = curs.fetchone()
    now = 0 if row is None else int(row["seq"] if isinstance(row, dict) else row[0])
    if now != applied:
        raise ReseedError(f"shard {shard}: the head moved to {now} during the re-seed")


def _add_segment(curs: Any, segment: Segment, archived_keys: list[tuple[str, int]]) -> None:
    """A copied segment's manifest row (its range has left this store's live table) and its
    records' keys; its events stay in the archive, as on the leader."""
    curs.execute(
        "INSERT INTO wal_archive_segments (shard_id, first_seq, last_seq, records, file, "
        "bytes, checksum, first_checksum, last_checksum, deleted) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, true)",
        (
            segment.shard_id,
            segment.first_seq,
            segment.last_seq,
            segment.records,
            segment.file,
            segment.bytes,
            segment.checksum,
            segment.first_checksum,
            segment.last_checksum,
        ),
    )
    with curs.copy("COPY reseed_keys (command_key, seq) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["text", "int8"])
        for key, seq in archived_keys:
            copy.write_row((key, seq))


def _add_records(curs: Any, records: list[WalRecord], events_table: str) -> None:
    """Live records of the leader after its archived seq (all after this standby's seq), and
    their events."""
    if not records:
        return
    copy_records(curs, records)
    copy_events(curs, events_table, [e for r in records for e in _stored_events(r)], records)


def _install_head(curs: Any, checkpoint: Any, head_epoch: int, legacy: int) -> None:
    """The leader's checkpoint, and the head at its seq."""
    shard = checkpoint.shard_id
    curs.execute(
        "INSERT INTO wal_checkpoints (shard_id, seq, epoch, state, state_hash, checksum) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (shard_id, seq) DO UPDATE SET "
        "epoch = EXCLUDED.epoch, state = EXCLUDED.state, state_hash = EXCLUDED.state_hash, "
        "checksum = EXCLUDED.checksum",
        (
            shard,
            checkpoint.seq,
            checkpoint.epoch,
            checkpoint.state,
            checkpoint.state_hash,
            checkpoint.checksum,
        ),
    )
    curs.execute(
        "INSERT INTO wal_heads (shard_id, seq, epoch) VALUES (%s, %s, %s) "
        "ON CONFLICT (shard_id) DO UPDATE SET seq = EXCLUDED.seq, "
        "epoch = GREATEST(wal_heads.epoch, EXCLUDED.epoch), updated_at = now()",
        (shard, checkpoint.seq, head_epoch),
    )
    if legacy:
        curs.execute(
            "INSERT INTO wal_chain_starts (shard_id, seq) VALUES (%s, %s) "
            "ON CONFLICT (shard_id) DO UPDATE SET seq = GREATEST(wal_chain_starts.seq, "
            "EXCLUDED.seq)",
            (shard, legacy),
        )


def _verify_link(
    chain: ChainCursor,
    keys: ReplicationKeys | None,
    seq: int,
    prev: str | None,
    checksum: str,
    mac: str | None,
    legacy: int,
) -> None:
    if keys is not None and not (mac is None and seq <= legacy):
        keys.verify_record(checksum, mac)
    chain.advance(seq, prev, checksum)


def _stored_events(record: WalRecord) -> list[StoredEvent]:
    return [
        StoredEvent(e.originator_id, e.originator_version, e.topic, e.state) for e in record.events
    ]


def _checksum_at(store: Any, shard: str, seq: int) -> str | None:
    if seq == 0:
        return None
    records = store.read_records(shard, seq - 1, 1, verify=False)
    if not records or records[0].seq != seq:
        raise ReseedError(f"shard {shard}: this standby's own record {seq} is not readable")
    return str(records[0].checksum)
