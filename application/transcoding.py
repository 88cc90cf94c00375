"""JSON transcoding that keeps enums and tuples as they were, so replay rebuilds equal state.

Python's json module writes a StrEnum as a bare string and a tuple as a list without asking the
transcoder, so a decoded event would carry "BUY" where the live one carried Side.BUY. Boxing them
first routes both through registered transcodings; the stored form names the enum's topic.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from eventsourcing.persistence import JSONTranscoder, Transcoding
from eventsourcing.utils import get_topic, resolve_topic


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
        enum_class = resolve_topic(data[0])
        member: Enum = enum_class(data[1])
        return member


class TupleAsList(Transcoding):
    type = _TupleBox
    name = "tuple"

    def encode(self, obj: _TupleBox) -> list[Any]:
        return obj.items

    def decode(self, data: list[Any]) -> tuple[Any, ...]:
        return tuple(data)


def _box(value: Any) -> Any:
    if isinstance(value, Enum):
        return _EnumBox(value)
    if isinstance(value, dict):
        return {k: _box(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return _TupleBox([_box(v) for v in value])
    if isinstance(value, list):
        return [_box(v) for v in value]
    return value


class TypedJSONTranscoder(JSONTranscoder):
    """eventsourcing's JSON transcoder plus faithful enums and tuples."""

    def __init__(self) -> None:
        super().__init__()
        self.register(EnumAsTopicAndValue())
        self.register(TupleAsList())

    def encode(self, obj: Any) -> bytes:
        return super().encode(_box(obj))
