"""Values from a drill's result, made safe to show: numbers, text, verdicts, percentiles."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

NO_DATA = "no data"


def escape(text: str) -> str:
    return html.escape(text, quote=True)


def mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def text(value: object, default: str) -> str:
    return default if value is None else str(value)


def as_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def num(value: object, digits: int | None = None, unit: str = "") -> str:
    """A count as it is, a float to `digits` places, anything else as "no data"."""
    number = as_number(value)
    if number is None:
        return NO_DATA
    if isinstance(value, int):
        text = str(value)
    else:
        text = f"{number:.{digits}f}" if digits is not None else f"{number:g}"
    return f"{text} {unit}" if unit else text


def positive(value: object) -> bool:
    number = as_number(value)
    return number is not None and number > 0


def verdict_of(result: Mapping[str, Any]) -> str:
    return "PASSED" if result.get("passed") is True else "FAILED"


def rto_text(result: Mapping[str, Any]) -> str:
    rto = as_number(result.get("rto_seconds"))
    if rto is not None:
        return f"{rto:.2f} s"
    expected = result.get("failover_expected")
    if expected is True:
        return "never recovered"
    return "no failover expected" if expected is False else NO_DATA


def mismatches_of(result: Mapping[str, Any]) -> list[Any] | None:
    found = mapping(result.get("audit")).get("mismatches")
    return list(found) if isinstance(found, list | tuple) else None


def hashes_equal(result: Mapping[str, Any]) -> bool | None:
    known = [v for v in mapping(result.get("state_hashes")).values() if v is not None]
    return len(set(map(str, known))) == 1 if len(known) >= 2 else None


def nearest_rank(ordered: Sequence[float], percent: int) -> float | None:
    if not ordered:
        return None
    return ordered[max(1, -(-percent * len(ordered) // 100)) - 1]


def total(results: Iterable[Mapping[str, Any]], key: str) -> int:
    return sum(int(as_number(r.get(key)) or 0) for r in results)


def stamp(started_at: object) -> str:
    moment = None
    if isinstance(started_at, str):
        try:
            moment = datetime.fromisoformat(started_at)
        except ValueError:
            moment = None
    if moment is None:
        moment = datetime.now(UTC)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
