"""Shared aggregate plumbing: cheaper event recording and uuid5 ids for the hot path."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID, SafeUUID

from eventsourcing.domain import (
    TZINFO,
    Aggregate,
    OriginatorIDError,
    OriginatorVersionError,
)

_E = TypeVar("_E", bound=Aggregate.Event)
_now = datetime.now  # what create_timestamp() ends in, without its two extra calls
_VERSION_MASK = ~((0xC000 << 48) | (0xF000 << 64))
_VERSION_BITS = (0x8000 << 48) | (5 << 76)
try:  # CPython's own SHA-1: for ids this short, OpenSSL's per-call setup costs 2-3x more
    from _sha1 import sha1 as _sha1
except ImportError:  # pragma: no cover - interpreters built without it
    _sha1 = hashlib.sha1
_new_object = object.__new__
_set_attribute = object.__setattr__
_UNKNOWN = SafeUUID.unknown


def sha1_digest(data: bytes) -> bytes:
    """SHA-1 of data (as hashlib.sha1(data).digest())."""
    digest: bytes = _sha1(data).digest()
    return digest


def uuid_of_digest(digest: bytes) -> UUID:
    """The version-5 UUID of a SHA-1 digest, as UUID(int=...) builds it minus its checks."""
    uuid = _new_object(UUID)
    _set_attribute(uuid, "int", (int.from_bytes(digest[:16]) & _VERSION_MASK) | _VERSION_BITS)
    _set_attribute(uuid, "is_safe", _UNKNOWN)
    return uuid


def uuid5_fast(namespace: UUID, name: str) -> UUID:
    """Exactly uuid.uuid5(namespace, name), without its per-call overhead."""
    return uuid_of_digest(sha1_digest(namespace.bytes + name.encode()))


def build_event(event_class: type[_E], fields: dict[str, Any]) -> _E:
    """Construct an event the way the store rebuilds one: straight into its __dict__.

    The frozen dataclass __init__ sets each field through object.__setattr__ and re-checks
    types in __post_init__, which costs more than everything else an event does here. The
    result is equal (==) to a normally constructed event and serialises identically (the
    mapper reads vars(event)); callers pass every field, computed by the engine.
    """
    event: _E = _new_object(event_class)
    event.__dict__.update(fields)
    return event


class ExchangeAggregate(Aggregate):
    """Aggregate that records engine-computed events with less per-event work.

    trigger_event() re-validates id and version and copies keyword arguments; the engine
    builds each event from the aggregate's own id and next version, so those checks cannot
    fail here and are skipped. Replay still goes through the library's mutate().
    """

    def _record(self, event_class: type[_E], **fields: Any) -> _E:
        # The attributes below are BaseAggregate's own (eventsourcing 9.5, pinned in
        # pyproject.toml, checked by tests/unit/test_eventsourcing_internals.py); going past
        # its properties saves four Python calls per event on the matching hot path.
        version = self._version + 1
        fields["originator_id"] = self._id
        fields["originator_version"] = version
        fields["timestamp"] = timestamp = _now(TZINFO)
        event: _E = _new_object(event_class)
        _set_attribute(event, "__dict__", fields)
        event.apply(self)
        self._version = version
        self._modified_on = timestamp
        self._pending_events.append(event)
        return event

    def replay(self, event: Aggregate.Event) -> None:
        """Apply a recorded event as Event.mutate() does: same checks, same errors, without
        its property calls (replay applies a million of them)."""
        if event.originator_id.int != self._id.int:
            raise OriginatorIDError(event.originator_id, self._id)
        next_version = self._version + 1
        if event.originator_version != next_version:
            raise OriginatorVersionError(event.originator_version, next_version)
        event.apply(self)
        self._version = event.originator_version
        self._modified_on = event.timestamp

    def collect_events(self) -> Sequence[Any]:
        """The pending events, handed over whole (the library pops them one at a time)."""
        collected = self._pending_events
        self._pending_events = []
        return collected
