"""The types stored data may name: our own aggregates, their events and our enums, nothing else.

A stored event, a snapshot, a checkpoint and an enum value carry the topic of their class
("domain.order:Order.Placed"). eventsourcing's `resolve_topic` imports whatever module such a
topic names and returns whatever attribute it names, which the decoder then calls: bytes from
the broker, the peer link or a restored store could run `os:system` with an argument of their
choosing. Decoding looks topics up here instead; the table is built once from the `domain`
package, so adding an event class to the domain is all it takes to make it decodable.
"""

from __future__ import annotations

import importlib
import pkgutil
from enum import Enum
from functools import cache
from typing import Any

from eventsourcing.domain import BaseAggregate, CanMutateAggregate, Snapshot
from eventsourcing.utils import get_topic

import domain

SNAPSHOT_TOPIC = get_topic(Snapshot)


class UnknownTypeError(ValueError):
    """Data names a type that is not one of ours: the record holding it is corrupt."""

    def __init__(self, kind: str, topic: object) -> None:
        shown = repr(topic)[:120]
        super().__init__(f"{kind} {shown} is not a type of this exchange's domain")
        self.kind = kind
        self.topic = topic


class TypeRegistry:
    """Topic -> class for the three kinds stored data names; any other topic is refused."""

    def __init__(
        self,
        aggregates: dict[str, type[Any]],
        events: dict[str, type[Any]],
        enums: dict[str, type[Enum]],
    ) -> None:
        self._aggregates = dict(aggregates)
        self._events = dict(events)
        self._enums = dict(enums)

    def aggregate(self, topic: object) -> type[Any]:
        cls = self._aggregates.get(topic) if type(topic) is str else None
        if cls is None:
            raise UnknownTypeError("aggregate class", topic)
        return cls

    def event(self, topic: object) -> type[Any]:
        cls = self._events.get(topic) if type(topic) is str else None
        if cls is None:
            raise UnknownTypeError("event class", topic)
        return cls

    def enum(self, topic: object) -> type[Enum]:
        cls = self._enums.get(topic) if type(topic) is str else None
        if cls is None:
            raise UnknownTypeError("enum", topic)
        return cls

    def check_event_state(self, cls: type[Any], state: dict[str, Any]) -> None:
        """The classes an event names in its state (a created event's aggregate, a snapshot's)
        are ours too: eventsourcing resolves them by import when it mutates."""
        named = state.get("originator_topic")
        if named is not None:
            self.aggregate(named)
        if cls is Snapshot:
            self.aggregate(state.get("topic"))

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(self._aggregates) | frozenset(self._events) | frozenset(self._enums)


def _domain_modules() -> list[Any]:
    return [
        importlib.import_module(f"{domain.__name__}.{info.name}")
        for info in pkgutil.iter_modules(domain.__path__)
    ]


def _ours(cls: type[Any]) -> bool:
    return cls.__module__.split(".")[0] == domain.__name__


def _nested_events(aggregate: type[Any]) -> list[type[Any]]:
    found: list[type[Any]] = []
    for name in dir(aggregate):
        value = getattr(aggregate, name, None)
        if isinstance(value, type) and issubclass(value, CanMutateAggregate) and _ours(value):
            found.append(value)
    return found


@cache
def domain_registry() -> TypeRegistry:
    """The registry of the `domain` package (built once per process)."""
    aggregates: dict[str, type[Any]] = {}
    events: dict[str, type[Any]] = {SNAPSHOT_TOPIC: Snapshot}
    enums: dict[str, type[Enum]] = {}
    for module in _domain_modules():
        for value in vars(module).values():
            if not isinstance(value, type) or not _ours(value):
                continue
            if issubclass(value, Enum):
                enums[get_topic(value)] = value
            elif issubclass(value, BaseAggregate):
                aggregates[get_topic(value)] = value
                for event in _nested_events(value):
                    events[get_topic(event)] = event
    return TypeRegistry(aggregates, events, enums)
