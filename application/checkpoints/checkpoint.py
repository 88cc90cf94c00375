"""Checkpoint state: the live aggregates column by column, so recovery restores them in bulk.

A checkpoint holds every open order. As one snapshot each (a JSON document revived value by
value, then Snapshot.mutate) an order costs tens of microseconds to restore; a big book took
seconds. Here the aggregates of one class are stored as columns of one JSON document: a column
of one type (ids, decimals, timestamps, members of one enum) converts in one pass at C speed,
and each aggregate is rebuilt straight into its __dict__, as Snapshot.mutate does. Values of
any other type keep the transcoder's JSON form and are revived like events.

Layout: MAGIC, then UTF-8 JSON {"counters": {...}, "groups": [{"topic", "class_version",
"keys", "columns"}]}. Checkpoints written before it (a length-prefixed counters document, then
one snapshot per aggregate) start with a zero byte; application/checkpoints/legacy.py reads them.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from enum import Enum
from itertools import repeat
from operator import itemgetter, setitem
from typing import Any
from uuid import UUID, SafeUUID

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic, resolve_topic

MAGIC = b"CKP2"

_RAW = frozenset({str, int, bool, type(None)})
_BOOKKEEPING = ("_id", "_version", "_pending_events")
_new_object = object.__new__
_set_attribute = object.__setattr__


class CheckpointFormatError(ValueError):
    """Checkpoint bytes that do not decode (their checksum matched: a writer bug)."""


def is_columnar(state: bytes) -> bool:
    """True for state written by encode_state."""
    return state[:4] == MAGIC


def encode_state(
    aggregates: Iterable[Aggregate], counters: dict[str, int], plain: Callable[[Any], Any]
) -> bytes:
    """Checkpoint bytes of the aggregates and the engine's counters.

    `plain(value)` is the transcoder's JSON form of a value no typed column takes.
    """
    groups: dict[tuple[type, tuple[str, ...]], list[dict[str, Any]]] = {}
    for aggregate in aggregates:
        state = vars(aggregate)
        groups.setdefault((type(aggregate), tuple(state)), []).append(state)
    encoded = []
    for (cls, names), states in groups.items():
        keys = [k for k in names if k not in _BOOKKEEPING] + ["_id", "_version"]
        encoded.append(
            {
                "topic": get_topic(cls),
                "class_version": getattr(cls, "class_version", 1),
                "keys": keys,
                "columns": [_encode_column(list(map(itemgetter(k), states)), plain) for k in keys],
            }
        )
    document = {"counters": dict(sorted(counters.items())), "groups": encoded}
    return MAGIC + json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def decode_state(
    state: bytes, revive: Callable[[Any], Any]
) -> tuple[list[Aggregate], dict[str, int]]:
    """The aggregates (in stored order) and counters of checkpoint bytes.

    `revive(value)` turns a transcoder's JSON form back into its value.
    """
    try:
        document = json.loads(state[len(MAGIC) :])
        aggregates: list[Aggregate] = []
        for group in document["groups"]:
            aggregates.extend(_decode_group(group, revive))
        counters = {str(k): int(v) for k, v in document["counters"].items()}
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise CheckpointFormatError(f"undecodable checkpoint: {exc!r}") from None
    return aggregates, counters


def _decode_group(group: dict[str, Any], revive: Callable[[Any], Any]) -> list[Aggregate]:
    cls = resolve_topic(group["topic"])
    keys: list[str] = group["keys"]
    columns = [_decode_column(column, revive) for column in group["columns"]]
    if len(keys) != len(columns) or keys[-2:] != ["_id", "_version"]:
        raise ValueError("columns do not match their keys")
    rows = len(columns[0]) if columns else 0
    if any(len(column) != rows for column in columns):
        raise ValueError("columns of unequal length")
    # the order Snapshot.mutate leaves: the state, then _id, _version, _pending_events
    keys = [*keys, "_pending_events"]
    columns.append([[] for _ in range(rows)])
    # copies of a dict that has every key, filled column by column: no dict grows key by key
    states = list(map(dict.copy, repeat(dict.fromkeys(keys), rows)))
    for key, column in zip(keys, columns, strict=True):
        deque(map(setitem, states, repeat(key), column), maxlen=0)
    from_version = group["class_version"]
    class_version = getattr(cls, "class_version", 1)
    if from_version != class_version:
        for state in states:
            _upcast(cls, state, from_version, class_version)
    aggregates: list[Aggregate] = []
    append = aggregates.append
    for state in states:
        aggregate = _new_object(cls)
        _set_attribute(aggregate, "__dict__", state)
        append(aggregate)
    return aggregates


def _upcast(cls: type, state: dict[str, Any], from_version: int, class_version: int) -> None:
    while from_version < class_version:
        getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(state)
        from_version += 1


# -- columns ---------------------------------------------------------------------------------


def _encode_column(values: list[Any], plain: Callable[[Any], Any]) -> list[Any]:
    column = _typed_column(values, plain)
    encoded = column[-1]
    if (
        column[0] != "forms"
        and len(encoded) >= _SHARED_MIN
        and set(map(type, encoded)) <= _SCALAR_KEYS
    ):
        # few distinct values (owners, account ids, prices): each converted once
        index: dict[Any, int] = {}
        positions = [index.setdefault(v, len(index)) for v in encoded]
        if len(index) * 4 <= len(encoded):
            return ["shared", [*column[:-1], list(index)], positions]
    return column


_SHARED_MIN = 64
_SCALAR_KEYS = frozenset({str, type(None)})  # never int: True == 1 would share one entry


def _typed_column(values: list[Any], plain: Callable[[Any], Any]) -> list[Any]:
    kinds = set(map(type, values))
    if kinds <= _RAW:
        return ["raw", values]
    if len(kinds) == 1:
        kind = next(iter(kinds))
        if kind is UUID:
            return ["uuid", [v.hex for v in values]]
        if kind is Decimal:
            return ["decimal", list(map(str, values))]
        if kind is datetime:
            return ["datetime", list(map(datetime.isoformat, values))]
    enums = kinds - {type(None)}
    if len(enums) == 1:
        kind = next(iter(enums))
        if issubclass(kind, Enum) and _values_are_keys(kind):
            return ["enum", get_topic(kind), [None if v is None else v.value for v in values]]
    return ["forms", [plain(v) for v in values]]


def _values_are_keys(kind: type[Enum]) -> bool:
    return all(type(member.value) in (str, int) for member in kind)


def _decode_column(column: list[Any], revive: Callable[[Any], Any]) -> list[Any]:
    kind = column[0]
    values: list[Any] = column[-1]
    if kind == "raw":
        return values
    if kind == "shared":
        distinct = _decode_column(column[1], revive)
        return list(map(distinct.__getitem__, values))
    if kind == "uuid":
        return _uuids_of_hex(values)
    if kind == "decimal":
        return list(map(Decimal, values))
    if kind == "datetime":
        return list(map(datetime.fromisoformat, values))
    if kind == "enum":
        enum_class = resolve_topic(column[1])
        members: dict[Any, Any] = {member.value: member for member in enum_class}
        members[None] = None
        return list(map(members.__getitem__, values))
    if kind == "forms":
        revived: list[Any] = revive(values)
        return revived
    raise ValueError(f"unknown column kind {kind!r}")


def _uuids_of_hex(hexes: list[str]) -> list[UUID]:
    """[UUID(h) for h in hexes] for the 32 digits UUID.hex writes, minus its parsing."""
    if any(len(h) != 32 for h in hexes):
        raise ValueError("not a UUID's 32 hex digits")
    uuids: list[UUID] = []
    append = uuids.append
    unknown = SafeUUID.unknown
    for value in map(int, hexes, repeat(16)):
        if value < 0:
            raise ValueError("not a UUID: negative")
        uuid = _new_object(UUID)
        _set_attribute(uuid, "int", value)
        _set_attribute(uuid, "is_safe", unknown)
        append(uuid)
    return uuids
