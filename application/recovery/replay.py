"""Fast replay: raw WAL rows to domain events to an engine, with the same results as the mapper.

Replay spends most of its time turning stored bytes back into events. `EventDecoder` builds the
very events eventsourcing's `Mapper.to_domain_event` builds (same class, same `__dict__`, values
of the same types and reprs), from the same stored bytes, with less work per event:

- the JSON is parsed by the C scanner, called directly and without an object hook, then only
  the values that are dicts or lists are walked (bottom-up, exactly like the hook) to revive
  `_type_`/`_data_` forms;
- immutable values that recur (Decimal amounts, UUIDs, enum members) come from small caches;
- topics resolve once per topic.

Anything the fast path does not know (a cipher or compressor, an upcast class version) goes
through the mapper; a value of a registered transcoding that is not one of the stock ones is
decoded by that transcoding, as the mapper would.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import weakref
from collections.abc import Callable, Generator, Hashable, Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, cast
from uuid import UUID

import orjson
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    TranscodingNotRegisteredError,
    UUIDAsHex,
    find_id_convertor,
)
from eventsourcing.utils import resolve_topic

from application.ports import WalStore
from application.wal.records import WALCorruptionError, WALGapError, compute_checksum, iter_payload
from application.wal.transcoding import EnumAsTopicAndValue, TupleAsList

_CACHE_MAX = 200_000
_MISSING: Any = object()
_LEAF_DATA = frozenset({str, list})


class EventDecoder:
    """Stored event (id, version, topic, state bytes) to domain event, like the mapper."""

    def __init__(self, mapper: Mapper[UUID]) -> None:
        self.mapper = mapper
        transcoder = mapper.transcoder
        self._fast = (
            isinstance(transcoder, JSONTranscoder)
            and mapper.cipher is None
            and mapper.compressor is None
        )
        self._names: dict[str, Any] = dict(getattr(transcoder, "names", {}))
        stock = {
            "decimal_str": DecimalAsStr,
            "uuid_hex": UUIDAsHex,
            "datetime_iso": DatetimeAsISO,
            "enum": EnumAsTopicAndValue,
            "tuple": TupleAsList,
        }
        # a name registered with a transcoding of another class is decoded by that transcoding
        self._stock = {name for name, kind in stock.items() if type(self._names.get(name)) is kind}
        self._classes: dict[str, tuple[type, Callable[[Any], Any]] | None] = {}
        self._decimals: dict[str, Decimal] = {}
        self._uuids: dict[str, UUID] = {}
        self._enums: dict[tuple[str, Any], Enum] = {}
        self._enum_types: dict[str, Any] = {}
        leaves: dict[str, Callable[[Any], Any]] = {
            "decimal_str": self._leaf_decimal,
            "uuid_hex": self._leaf_uuid,
            "datetime_iso": self._leaf_datetime,
            "enum": self._leaf_enum,
        }
        self._leaves = {name: leaf for name, leaf in leaves.items() if name in self._stock}

    def decode(self, originator_id: UUID, version: int, topic: str, state: bytes) -> Any:
        """The domain event the mapper would return for this stored event."""
        if topic in self._classes:
            entry = self._classes[topic]
        else:
            entry = self._class_for(topic, originator_id)
        if entry is None:
            return self.mapper.to_domain_event(StoredEvent(originator_id, version, topic, state))
        cls, convert = entry
        try:
            event_state = orjson.loads(state)
            revived = self._revive_dict(event_state)
        except Exception:
            # let the mapper raise its own, detailed error
            return self.mapper.to_domain_event(StoredEvent(originator_id, version, topic, state))
        if type(revived) is not dict or "class_version" in revived:
            return self.mapper.to_domain_event(StoredEvent(originator_id, version, topic, state))
        revived["originator_id"] = convert(originator_id)
        revived["originator_version"] = version
        event: Any = object.__new__(cls)
        object.__setattr__(event, "__dict__", revived)
        return event

    def _class_for(
        self, topic: str, originator_id: UUID
    ) -> tuple[type, Callable[[Any], Any]] | None:
        cls = resolve_topic(topic)
        entry: tuple[type, Callable[[Any], Any]] | None = None
        if self._fast and getattr(cls, "class_version", 1) == 1:
            entry = (cls, find_id_convertor(cls, cast(Hashable, type(originator_id))))
        self._classes[topic] = entry
        return entry

    # -- reviving transcoded values --------------------------------------------------------

    def revive(self, value: Any) -> Any:
        """The value the transcoder encoded as this JSON-native data (revived in place)."""
        kind = type(value)
        if kind is dict:
            return self._revive_dict(value)
        if kind is list:
            return self._revive_list(value)
        return value

    def _revive_dict(self, d: dict[str, Any]) -> Any:
        leaves = self._leaves
        for key, value in d.items():
            kind = type(value)
            if kind is dict:
                if len(value) == 2:
                    # the common case, a form with a scalar (or [topic, value]) payload
                    name = value.get("_type_")
                    data = value.get("_data_", _MISSING)
                    if type(name) is str and type(data) in _LEAF_DATA:
                        leaf = leaves.get(name)
                        if leaf is not None:
                            revived = leaf(data)
                            if revived is not _MISSING:
                                d[key] = revived
                                continue
                d[key] = self._revive_dict(value)
            elif kind is list:
                d[key] = self._revive_list(value)
        if len(d) == 2 and "_type_" in d and "_data_" in d:
            return self._transcoded(d["_type_"], d["_data_"])
        return d

    def _leaf_decimal(self, data: Any) -> Any:
        if type(data) is not str:
            return _MISSING
        decimal = self._decimals.get(data)
        if decimal is None:
            if len(self._decimals) >= _CACHE_MAX:
                self._decimals.clear()
            decimal = self._decimals[data] = Decimal(data)
        return decimal

    def _leaf_uuid(self, data: Any) -> Any:
        if type(data) is not str:
            return _MISSING
        uuid = self._uuids.get(data)
        if uuid is None:
            if len(self._uuids) >= _CACHE_MAX:
                self._uuids.clear()
            uuid = self._uuids[data] = UUID(data)
        return uuid

    @staticmethod
    def _leaf_datetime(data: Any) -> Any:
        if type(data) is not str:
            return _MISSING
        return datetime.fromisoformat(data)

    def _leaf_enum(self, data: Any) -> Any:
        if type(data) is not list or len(data) != 2:
            return _MISSING
        topic, raw = data
        if type(topic) is not str or type(raw) not in (str, int):
            return _MISSING
        key = (topic, raw)
        member = self._enums.get(key)
        if member is None:
            enum_class = self._enum_types.get(topic)
            if enum_class is None:
                enum_class = self._enum_types[topic] = resolve_topic(topic)
            member = self._enums[key] = enum_class(raw)
        return member

    def _revive_list(self, items: list[Any]) -> list[Any]:
        for index, value in enumerate(items):
            kind = type(value)
            if kind is dict:
                items[index] = self._revive_dict(value)
            elif kind is list:
                items[index] = self._revive_list(value)
        return items

    def _transcoded(self, name: str, data: Any) -> Any:
        leaf = self._leaves.get(name)
        if leaf is not None:
            revived = leaf(data)
            if revived is not _MISSING:
                return revived
        if name == "tuple" and name in self._stock:
            return tuple(data)
        try:
            transcoding = self._names[name]
        except KeyError as exc:
            raise TranscodingNotRegisteredError(name) from exc
        return transcoding.decode(data)


_DECODERS: weakref.WeakKeyDictionary[Mapper[UUID], EventDecoder] = weakref.WeakKeyDictionary()


def decoder_for(mapper: Mapper[UUID]) -> EventDecoder:
    """One decoder (and its caches) per mapper."""
    decoder = _DECODERS.get(mapper)
    if decoder is None:
        decoder = _DECODERS[mapper] = EventDecoder(mapper)
    return decoder


# a stored WAL row as replay reads it:
# seq, epoch, command_type, command_key, recorded_at_us, payload, checksum
RawRow = tuple[int, int, str, str | None, int, bytes, str]


def prefetch(pages: Iterator[list[RawRow]], depth: int = 2) -> Generator[list[RawRow], None, None]:
    """Read the next pages on a background thread while the caller applies the current one.

    The driver releases the GIL while it waits for the server, so reading overlaps applying.
    An exception of the reader is raised to the caller in order, after the pages before it.
    """
    channel: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for page in pages:
                if stop.is_set():
                    return
                channel.put(("page", page))
        except BaseException as exc:  # handed to the consumer, raised there
            channel.put(("error", exc))
            return
        channel.put(("end", None))

    reader = threading.Thread(target=run, name="wal-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            kind, item = channel.get()
            if kind == "page":
                yield item
            elif kind == "error":
                raise item
            else:
                return
    finally:
        stop.set()
        while reader.is_alive():
            with contextlib.suppress(queue.Empty):
                channel.get(timeout=0.05)
        close = getattr(pages, "close", None)
        if close is not None:
            close()


def replay_rows(
    shard_id: str,
    pages: Iterable[list[RawRow]],
    decoder: EventDecoder,
    apply: Callable[[Aggregate.Event], None],
    *,
    expected: int,
    on_record: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Verify, decode and apply raw WAL rows in seq order, starting at seq `expected`.

    Every checksum is verified before anything of its record is decoded; a mismatch raises
    WALCorruptionError naming shard and seq, with nothing at or after that seq applied.
    `on_record(seq)` runs after each applied record. Returns (next expected seq, events).
    """
    decode = decoder.decode
    events = 0
    for page in pages:
        for seq, epoch, command_type, command_key, recorded_at_us, payload, checksum in page:
            if seq != expected:
                raise WALGapError(shard_id, expected, seq)
            if (
                compute_checksum(
                    shard_id, epoch, seq, command_type, command_key, recorded_at_us, payload
                )
                != checksum
            ):
                raise WALCorruptionError(shard_id, seq)
            try:
                stored = list(iter_payload(payload))
            except (ValueError, KeyError, TypeError) as exc:
                raise WALCorruptionError(shard_id, seq, f"undecodable payload: {exc}") from None
            for originator_id, version, topic, state in stored:
                apply(cast(Aggregate.Event, decode(originator_id, version, topic, state)))
            events += len(stored)
            expected += 1
            if on_record is not None:
                on_record(seq)
    return expected, events


def raw_pages(
    store: WalStore, shard_id: str, after_seq: int, upto_seq: int
) -> Generator[list[RawRow], None, None]:
    """Pages of stored rows after `after_seq` up to `upto_seq`, read ahead on a thread.

    Stores without a raw reader are read through iter_records (their checksums are then
    verified twice, which costs time, not correctness).
    """
    reader = getattr(store, "iter_raw_pages", None)
    if reader is not None:
        pages: Iterator[list[RawRow]] = reader(shard_id, after_seq, upto_seq)
    else:
        pages = _pages_of_records(store, shard_id, after_seq, upto_seq)
    return prefetch(pages)


def _pages_of_records(
    store: WalStore, shard_id: str, after_seq: int, upto_seq: int, page: int = 2000
) -> Iterator[list[RawRow]]:
    batch: list[RawRow] = []
    for r in store.iter_records(shard_id, after_seq, upto_seq=upto_seq):
        batch.append(
            (r.seq, r.epoch, r.command_type, r.command_key, r.recorded_at_us, r.payload, r.checksum)
        )
        if len(batch) >= page:
            yield batch
            batch = []
    if batch:
        yield batch
