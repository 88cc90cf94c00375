"""JSON transcoding that keeps enums and tuples as they were, so replay rebuilds equal state.

Python's json module writes a StrEnum as a bare string and a tuple as a list without asking the
transcoder, so a decoded event would carry "BUY" where the live one carried Side.BUY. Boxing them
first routes both through registered transcodings; the stored form names the enum's topic.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoder,
    Transcoding,
    UUIDAsHex,
)
from eventsourcing.utils import get_topic

from application.wal.registry import UnknownTypeError, domain_registry


class _EnumBox:
    __slots__ = ("member",)

    def __init__(self, member: Enum) -> None:
        self.member = member


class _TupleBox:
    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items


class EnumAsTopicAndValue(Transcoding):
    type = _EnumBox
    name = "enum"

    def encode(self, obj: _EnumBox) -> list[Any]:
        return [get_topic(type(obj.member)), obj.member.value]

    def decode(self, data: list[Any]) -> Enum:
        """The member, of one of our own enums only (application/wal/registry.py)."""
        enum_class = domain_registry().enum(data[0])
        member: Enum = enum_class(data[1])
        return member


class TupleAsList(Transcoding):
    type = _TupleBox
    name = "tuple"

    def encode(self, obj: _TupleBox) -> list[Any]:
        return obj.items

    def decode(self, data: list[Any]) -> tuple[Any, ...]:
        return tuple(data)


_PLAIN = frozenset({str, int, bool, float, type(None), Decimal, UUID, datetime})


def _box(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, Enum):
        return _EnumBox(value)
    if kind is dict:
        return {k: v if type(v) in _PLAIN else _box(v) for k, v in value.items()}
    if kind is tuple:
        return _TupleBox([_box(v) for v in value])
    if kind is list:
        return [_box(v) for v in value]
    return value


_TOPICS: dict[type, str] = {}


def _enum_form(value: Enum) -> dict[str, Any]:
    kind = type(value)
    topic = _TOPICS.get(kind)
    if topic is None:
        topic = _TOPICS[kind] = get_topic(kind)
    return {"_type_": "enum", "_data_": [topic, value.value]}


_NATIVE: frozenset[type] = frozenset({str, int, bool, float, type(None)})
_FORMS: dict[type, Any] = {
    Decimal: lambda v: {"_type_": "decimal_str", "_data_": str(v)},
    UUID: lambda v: {"_type_": "uuid_hex", "_data_": v.hex},
    datetime: lambda v: {"_type_": "datetime_iso", "_data_": v.isoformat()},
    tuple: lambda v: {"_type_": "tuple", "_data_": [_plain(x) for x in v]},
    list: lambda v: [_plain(x) for x in v],
    # native values (most of an event's fields) are taken as they are, without a call
    dict: lambda v: {k: x if type(x) in _NATIVE else _plain(x) for k, x in v.items()},
}


class _NotPlain(Exception):
    pass


def _plain(value: Any) -> Any:
    """The JSON-native form the registered transcodings would produce, in one walk."""
    kind = type(value)
    if kind in _NATIVE:
        return value
    form = _FORMS.get(kind)
    if form is not None:
        return form(value)
    if isinstance(value, Enum):
        _FORMS[kind] = _enum_form  # found directly from now on
        return _enum_form(value)
    raise _NotPlain


class TypedJSONTranscoder(JSONTranscoder):
    """eventsourcing's JSON transcoder plus faithful enums and tuples.

    Encoding takes a fast path for the types the domain uses: one walk turns the value into what
    the registered transcodings would emit, then orjson writes it (the same bytes as the
    standard library's compact form, an order of magnitude sooner). Anything else falls back to
    the library's own path. The stored form is the same either way.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register(EnumAsTopicAndValue())
        self.register(TupleAsList())

    def encode(self, obj: Any) -> bytes:
        try:
            plain = _plain(obj)
        except _NotPlain:
            return super().encode(_box(obj))
        try:
            return orjson.dumps(plain)
        except TypeError:  # beyond orjson's range (an int over 64 bits): the library decides
            return super().encode(_box(obj))


def plain_form(transcoder: Transcoder, value: Any) -> Any:
    """The JSON-native data `transcoder` writes for a value (its registered forms included)."""
    if isinstance(transcoder, TypedJSONTranscoder):
        try:
            return _plain(value)
        except _NotPlain:
            pass
    return json.loads(transcoder.encode(value))


class DomainMapper(Mapper[UUID]):
    """eventsourcing's mapper, decoding only the event classes of our own domain.

    The library resolves a stored topic by import, and so would a created event's
    `originator_topic` and a snapshot's `topic` when mutated: each is looked up in the registry
    first, and anything else raises UnknownTypeError (a corrupt record)."""

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        registry = domain_registry()
        registry.event(stored_event.topic)
        try:
            event = super().to_domain_event(stored_event)
        except MapperDeserialisationError as exc:
            if isinstance(exc.__cause__, UnknownTypeError):
                raise exc.__cause__ from None
            raise
        registry.check_event_state(type(event), vars(event))
        return event


def make_mapper() -> Mapper[UUID]:
    """The mapper every reader of our stored events uses (projections, tools, the shard)."""
    transcoder = TypedJSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DecimalAsStr())
    transcoder.register(DatetimeAsISO())
    return DomainMapper(transcoder=transcoder)
