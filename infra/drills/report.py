"""Drill reports: the raw result for scripts, one self-contained page and short tables for people.

The page has no external resources (inline CSS, inline SVG drawn here) so it can be attached to an
incident ticket or opened offline years later. Every string that came from a drill is escaped.
"""

from __future__ import annotations

import html
import json
import math
import re
import secrets
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

NO_DATA = "no data"
BIN_SECONDS = 0.25

RED, GREEN, BLUE = "#cf222e", "#1a7f37", "#0969da"
REGION_COLOURS = ("#8250df", "#d4760a", "#1b9e77", "#bf3989", "#6e7781", "#953800")

WIDTH, LEFT, RIGHT = 960.0, 78.0, 24.0
PANEL_H, PANEL_GAP, ROW_H, AXIS_H = 120.0, 34.0, 13.0, 44.0


def write_report(result: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """Keep every drill's evidence: `<kind>-<start>-<6 hex>.json` and a matching `.html`."""
    directory.mkdir(parents=True, exist_ok=True)
    kind = re.sub(r"[^A-Za-z0-9_-]+", "-", str(result.get("kind") or "drill")).strip("-")
    stem = f"{kind or 'drill'}-{_stamp(result.get('started_at'))}"
    # default=str: a drill's evidence must not be lost to one value json cannot spell
    document = json.dumps(result, indent=2, sort_keys=False, default=str) + "\n"
    while True:
        json_path = directory / f"{stem}-{secrets.token_hex(3)}.json"
        try:
            with json_path.open("x", encoding="utf-8") as out:
                out.write(document)
        except FileExistsError:
            continue
        # the JSON is on disk first: a page that fails to render must not cost the evidence
        html_path = json_path.with_suffix(".html")
        html_path.write_text(render_html(result), encoding="utf-8")
        return json_path, html_path


def render_html(result: dict[str, Any]) -> str:
    """The whole page as one string: verdict, key figures, failures, timeline, steps."""
    kind = _e(_text(result.get("kind"), "drill"))
    started = _e(_text(result.get("started_at"), "unknown start"))
    verdict = _verdict(result)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{kind} drill {verdict} {started}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            f'<h1>Drill {kind}: <span class="verdict {verdict.lower()}">{verdict}</span></h1>',
            f'<p class="sub">started {started} · {_e(_load_line(result))}</p>',
            "<h2>Key figures</h2>",
            _figures_table(result),
            _failures_section(result),
            "<h2>Timeline</h2>",
            render_timeline_svg(result),
            "<h2>Steps</h2>",
            _steps_list(result),
            "</body>",
            "</html>",
            "",
        ]
    )


def format_table(result: dict[str, Any]) -> str:
    """A few fixed-width lines for the terminal, like `patronictl list`."""
    get = result.get
    mismatches = _mismatches(result)
    rows = [
        ("drill", f"{_text(get('kind'), 'drill')}  {_verdict(result)}"),
        ("rto", _rto_text(result)),
        ("acked", f"{_num(get('acked'))} of {_num(get('sent'))} sent"),
        ("lost/dup/phantom", " / ".join(_num(get(k)) for k in ("lost", "duplicated", "phantom"))),
        ("cancels lost", _num(get("cancels_lost"))),
        ("refused", f"{_num(get('refused'))} over {_num(get('refused_window_seconds'), 2, 's')}"),
        ("epoch", f"{_num(get('epoch_before'))} -> {_num(get('epoch_after'))}"),
        ("audit mismatches", NO_DATA if mismatches is None else str(len(mismatches))),
        (
            "ack p50/p99",
            f"{_num(get('ack_p50_ms'), 1, 'ms')} / {_num(get('ack_p99_ms'), 1, 'ms')}",
        ),
    ]
    failures = get("failures")
    if isinstance(failures, list):
        rows += [("failure", _text(f, "?")) for f in failures]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Many drills in one verdict: counts per kind, RTO percentiles, what was lost, what failed.

    The headline RTO covers the drills that fail over (`failover_expected`); each kind also
    gets its own p50/max (for the others: the longest stretch without acknowledgements)."""
    kinds: dict[str, dict[str, Any]] = {}
    per_kind: dict[str, list[float]] = {}
    failed: list[str] = []
    rtos: list[float] = []
    for result in results:
        kind = _text(result.get("kind"), "drill")
        tally = kinds.setdefault(kind, {"count": 0, "passed": 0})
        tally["count"] += 1
        if result.get("passed") is True:
            tally["passed"] += 1
        else:
            failures = result.get("failures")
            reason = str(failures[0]) if isinstance(failures, list) and failures else None
            failed.append(f"{kind} #{tally['count']}: {reason or 'failed, no reason recorded'}")
        rto = _number(result.get("rto_seconds"))
        if rto is not None:
            per_kind.setdefault(kind, []).append(rto)
            if result.get("failover_expected", True) is not False:
                rtos.append(rto)
    for kind, values in per_kind.items():
        values.sort()
        kinds[kind]["rto_p50"] = _nearest_rank(values, 50)
        kinds[kind]["rto_max"] = values[-1]
    rtos.sort()
    return {
        "drills": len(results),
        "kinds": kinds,
        "rto_drills": len(rtos),
        "rto_p50": _nearest_rank(rtos, 50),
        "rto_p99": _nearest_rank(rtos, 99),
        "rto_max": rtos[-1] if rtos else None,
        "lost": _total(results, "lost"),
        "duplicated": _total(results, "duplicated"),
        "phantom": _total(results, "phantom"),
        "cancels_lost": _total(results, "cancels_lost"),
        "audit_mismatches": sum(len(_mismatches(r) or []) for r in results),
        "failed": failed,
        # no drills run is not a pass
        "passed": bool(results) and not failed,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few readable lines, failures last so they are what the eye lands on."""
    get = summary.get
    verdict = "PASSED" if get("passed") is True else "FAILED"
    kinds = _mapping(get("kinds"))
    width = max([len(str(kind)) for kind in kinds] + [4])
    lines = [f"drills: {_num(get('drills'))}  {verdict}"]
    lines += [
        f"  {kind:<{width}}  {_num(tally.get('passed'))}/{_num(tally.get('count'))} passed"
        + (
            f"  rto p50 {_num(tally.get('rto_p50'), 2, 's')}"
            f" max {_num(tally.get('rto_max'), 2, 's')}"
            if tally.get("rto_max") is not None
            else ""
        )
        for kind, tally in kinds.items()
        if isinstance(tally, Mapping)
    ]
    lines.append(
        f"rto: p50 {_num(get('rto_p50'), 2, 's')}  p99 {_num(get('rto_p99'), 2, 's')}"
        f"  max {_num(get('rto_max'), 2, 's')}  over {_num(get('rto_drills'))} failover drills"
    )
    lines.append(
        f"lost {_num(get('lost'))}  duplicated {_num(get('duplicated'))}"
        f"  phantom {_num(get('phantom'))}  cancels lost {_num(get('cancels_lost'))}"
        f"  audit mismatches {_num(get('audit_mismatches'))}"
    )
    failed = get("failed")
    if isinstance(failed, list) and failed:
        lines.append("failed:")
        lines += [f"  {line}" for line in failed]
    return "\n".join(lines)


# -- values ---------------------------------------------------------------------------------


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object, default: str) -> str:
    return default if value is None else str(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _num(value: object, digits: int | None = None, unit: str = "") -> str:
    """A count as it is, a float to `digits` places, anything else as "no data"."""
    number = _number(value)
    if number is None:
        return NO_DATA
    if isinstance(value, int):
        text = str(value)
    else:
        text = f"{number:.{digits}f}" if digits is not None else f"{number:g}"
    return f"{text} {unit}" if unit else text


def _positive(value: object) -> bool:
    number = _number(value)
    return number is not None and number > 0


def _verdict(result: Mapping[str, Any]) -> str:
    return "PASSED" if result.get("passed") is True else "FAILED"


def _rto_text(result: Mapping[str, Any]) -> str:
    rto = _number(result.get("rto_seconds"))
    if rto is not None:
        return f"{rto:.2f} s"
    expected = result.get("failover_expected")
    if expected is True:
        return "never recovered"
    return "no failover expected" if expected is False else NO_DATA


def _mismatches(result: Mapping[str, Any]) -> list[Any] | None:
    found = _mapping(result.get("audit")).get("mismatches")
    return list(found) if isinstance(found, list | tuple) else None


def _hashes_equal(result: Mapping[str, Any]) -> bool | None:
    known = [v for v in _mapping(result.get("state_hashes")).values() if v is not None]
    return len(set(map(str, known))) == 1 if len(known) >= 2 else None


def _nearest_rank(ordered: Sequence[float], percent: int) -> float | None:
    if not ordered:
        return None
    return ordered[max(1, -(-percent * len(ordered) // 100)) - 1]


def _total(results: Iterable[Mapping[str, Any]], key: str) -> int:
    return sum(int(_number(r.get(key)) or 0) for r in results)


def _stamp(started_at: object) -> str:
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


# -- page sections --------------------------------------------------------------------------


_CSS = (
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;"
    "background:#fff;max-width:1000px;margin:24px auto;padding:0 16px}"
    "h1{font-size:22px;margin:0 0 4px}"
    "h2{font-size:16px;margin:24px 0 8px;padding-bottom:4px;border-bottom:1px solid #d0d7de}"
    ".verdict{color:#fff;padding:1px 8px;border-radius:4px}"
    f".passed{{background:{GREEN}}}.failed{{background:{RED}}}"
    ".sub{color:#57606a;margin:0}"
    "table.figures{border-collapse:collapse}"
    ".figures th,.figures td{text-align:left;vertical-align:top;padding:3px 16px 3px 0;"
    "border-bottom:1px solid #eaeef2}"
    ".figures th{font-weight:600;color:#57606a}"
    f"td.bad,.failures li{{color:{RED};font-weight:600}}"
    ".nodata{color:#6e7781;font-style:italic}"
    ".steps .t{display:inline-block;min-width:72px;color:#57606a;font-variant-numeric:tabular-nums}"
    "code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}"
    "svg{max-width:100%;height:auto;font-family:system-ui,sans-serif;font-size:11px}"
)


def _load_line(result: Mapping[str, Any]) -> str:
    get = result.get
    expected = "failover expectation unknown"
    if isinstance(get("failover_expected"), bool):
        expected = "failover expected" if get("failover_expected") else "no failover expected"
    return (
        f"mode {_text(get('mode'), NO_DATA)} · rate {_num(get('rate'), None, 'orders/s')}"
        f" · {_num(get('seconds'), None, 's')} of load · {expected}"
    )


_BAD = ' class="bad"'


def _figures_table(result: Mapping[str, Any]) -> str:
    get = result.get
    losses = [get("lost"), get("duplicated"), get("phantom")]
    mismatches = _mismatches(result)
    audit = _mapping(get("audit"))
    counted = ", ".join(f"{_num(audit.get(k))} {k}" for k in ("accounts", "positions", "trades"))
    equal = _hashes_equal(result)
    hashes = _mapping(get("state_hashes"))
    listed = "; ".join(f"{region} {str(value)[:16]}" for region, value in hashes.items())
    rows = [
        ("RTO", _e(_rto_text(result)), _rto_text(result) == "never recovered"),
        ("sent / acked", _e(f"{_num(get('sent'))} / {_num(get('acked'))}"), False),
        (
            "lost / duplicated / phantom",
            _e(" / ".join(map(_num, losses))),
            any(map(_positive, losses)),
        ),
        (
            "cancels lost",
            _e(
                f"{_num(get('cancels_lost'))} ({_num(get('cancels_acked'))} of "
                f"{_num(get('cancels_sent'))} cancels acked)"
            ),
            _positive(get("cancels_lost")),
        ),
        (
            "refused / refused window",
            _e(f"{_num(get('refused'))} / {_num(get('refused_window_seconds'), 2, 's')}"),
            False,
        ),
        (
            "ack latency p50 / p99",
            _e(f"{_num(get('ack_p50_ms'), 1, 'ms')} / {_num(get('ack_p99_ms'), 1, 'ms')}"),
            False,
        ),
        (
            "epoch before → after",
            _e(f"{_num(get('epoch_before'))} → {_num(get('epoch_after'))}"),
            False,
        ),
        (
            "leader before → after",
            _e(f"{_text(get('leader_before'), NO_DATA)} → {_text(get('leader_after'), NO_DATA)}"),
            False,
        ),
        (
            "audit mismatches",
            _e(NO_DATA if mismatches is None else f"{len(mismatches)} ({counted})"),
            bool(mismatches),
        ),
        (
            "state hashes",
            _e({True: "equal", False: "DIFFERENT", None: NO_DATA}[equal])
            + (f" <code>{_e(listed)}</code>" if listed else ""),
            equal is False,
        ),
    ]
    body = "".join(
        f"<tr><th>{_e(label)}</th><td{_BAD if bad else ''}>{value}</td></tr>"
        for label, value, bad in rows
    )
    return f'<table class="figures">{body}</table>'


def _failures_section(result: Mapping[str, Any]) -> str:
    failures = result.get("failures")
    parts = []
    if isinstance(failures, list) and failures:
        items = "".join(f"<li>{_e(str(reason))}</li>" for reason in failures)
        parts.append(f'<h2>Failures</h2><ul class="failures">{items}</ul>')
    elif result.get("passed") is not True:
        parts.append('<h2>Failures</h2><p class="nodata">failed, no reason recorded</p>')
    mismatches = _mismatches(result) or []
    if mismatches:
        shown = "".join(
            f"<li><code>{_e(json.dumps(m, default=str))}</code></li>" for m in mismatches[:50]
        )
        more = f"<p>and {len(mismatches) - 50} more</p>" if len(mismatches) > 50 else ""
        parts.append(
            f"<details><summary>{len(mismatches)} audit mismatches</summary>"
            f"<ul>{shown}</ul>{more}</details>"
        )
    return "\n".join(parts)


def _steps_list(result: Mapping[str, Any]) -> str:
    steps = result.get("steps")
    if not isinstance(steps, list) or not steps:
        return f'<p class="nodata">{NO_DATA}</p>'
    items = []
    for step in steps:
        at, text = (step.get("t"), step.get("text")) if isinstance(step, Mapping) else (None, step)
        at_text = _num(at, 2, "s") if at is not None else "·"
        items.append(f'<li><span class="t">{_e(at_text)}</span> {_e(_text(text, ""))}</li>')
    return f'<ol class="steps">{"".join(items)}</ol>'


# -- timeline -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scale:
    """Data to pixels; clamps so a stray sample cannot draw outside its panel."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    def __call__(self, value: float) -> float:
        lo, hi, v = self.lo, self.hi, min(max(value, self.lo), self.hi)
        if self.log:
            lo, hi, v = math.log10(lo), math.log10(hi), math.log10(v)
        return self.start + (v - lo) / (hi - lo) * (self.end - self.start)


@dataclass(frozen=True)
class _Timeline:
    acks: list[tuple[float, float | None, str]]
    refusals: list[tuple[float, str]]
    lag: list[tuple[float, str, float | None, float | None]]
    events: dict[str, float]

    @property
    def regions(self) -> list[str]:
        return sorted({a[2] for a in self.acks} | {s[1] for s in self.lag})


def _parse_timeline(result: Mapping[str, Any]) -> _Timeline:
    raw = _mapping(result.get("timeline"))

    def rows(key: str, width: int) -> list[tuple[float, list[object]]]:
        """(t, the other fields padded with None to `width`); rows without a time are dropped."""
        found = raw.get(key)
        parsed = []
        for row in found if isinstance(found, list | tuple) else []:
            t = _number(row[0]) if isinstance(row, list | tuple) and row else None
            if t is not None:
                parsed.append((t, [*row[1:], *[None] * width][:width]))
        return parsed

    events = _mapping(result.get("events"))
    return _Timeline(
        acks=[(t, _number(ms), _text(r, "?")) for t, (ms, r) in rows("acks", 2)],
        refusals=[(t, _text(code, "?")) for t, (code,) in rows("refusals", 1)],
        lag=[(t, _text(r, "?"), _number(s), _number(n)) for t, (r, s, n) in rows("lag", 3)],
        events={
            k: v for k, v in ((k, _number(events.get(k))) for k in _EVENT_KEYS) if v is not None
        },
    )


_EVENT_KEYS = ("failure", "promotion", "first_ack_new", "healed")
_MARKERS = (("failure", RED), ("promotion", GREEN), ("healed", BLUE))


def _f(value: float) -> str:
    return f"{value:.1f}"


def _nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9)
    return [round(i * step, 9) for i in range(first, math.floor(hi / step + 1e-9) + 1)]


def _nice_top(peak: float) -> tuple[float, list[float]]:
    """A linear 0..top axis whose top is a tick at or above `peak`."""
    ticks = _nice_ticks(0.0, max(peak, 1.0), 4)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    if ticks[-1] < peak:
        ticks.append(round(ticks[-1] + step, 9))
    return ticks[-1], ticks


def _log_range(values: Sequence[float]) -> tuple[float, float, list[float]]:
    positive = [v for v in values if v > 0] or [1.0]
    lo = 10.0 ** math.floor(math.log10(min(positive)))
    hi = max(10.0 ** math.ceil(math.log10(max(positive))), lo * 10)
    decades = round(math.log10(hi / lo))
    ticks = []
    for k in range(decades + 1):
        base = lo * 10**k
        ticks += [base] + ([base * 2, base * 5] if decades <= 2 and k < decades else [])
    return lo, hi, ticks


def _ms_label(value: float) -> str:
    return f"{value:g} ms" if value < 1000 else f"{value / 1000:g} s"


def _path(points: Sequence[tuple[float, float] | None]) -> str:
    """A polyline that breaks at None; a lone point still shows as a dot (round caps)."""
    parts: list[str] = []
    pen_down = False
    for point in points:
        if point is None:
            pen_down = False
            continue
        parts.append(("L" if pen_down else "M") + f"{_f(point[0])} {_f(point[1])}")
        if not pen_down:
            parts.append("l0.01 0")
        pen_down = True
    return "".join(parts)


def _bin(t: float) -> int:
    return math.floor(t / BIN_SECONDS)


def render_timeline_svg(result: dict[str, Any]) -> str:
    """Three panels on one time axis: ack rate, ack latency with refusals, standby lag."""
    tl = _parse_timeline(result)
    times = [a[0] for a in tl.acks] + [r[0] for r in tl.refusals] + [s[0] for s in tl.lag]
    times += list(tl.events.values())
    lo = min([0.0, *times])
    hi = max([lo + 1.0, _number(result.get("seconds")) or 0.0, *times])
    x = _Scale(lo, hi, LEFT, WIDTH - RIGHT)
    colours = {r: REGION_COLOURS[i % len(REGION_COLOURS)] for i, r in enumerate(tl.regions)}

    legend, legend_h = _legend(colours)
    header = legend_h + 4 * ROW_H + 4
    tops = [header + PANEL_GAP + i * (PANEL_H + PANEL_GAP) for i in range(3)]
    bottom = tops[-1] + PANEL_H
    height = bottom + AXIS_H
    out = [
        f'<svg width="{WIDTH:.0f}" height="{height:.0f}" viewBox="0 0 {WIDTH:.0f} {height:.0f}"'
        f' role="img" aria-label="timeline of the drill">',
        "<title>drill timeline: ack rate, ack latency and refusals, standby lag</title>",
        f'<rect x="0" y="0" width="{WIDTH:.0f}" height="{height:.0f}" fill="#ffffff"/>',
        *legend,
        *_time_grid(x, tops),
        *_rto_span(result, tl, x, legend_h + ROW_H - 3, tops[0], bottom),
        *_ack_rate_panel(tl, x, tops[0], colours),
        *_latency_panel(tl, x, tops[1]),
        *_lag_panel(tl, x, tops[2], colours),
        *_markers(tl, x, legend_h + 2 * ROW_H - 3, bottom),
        *_time_axis(x, bottom),
        "</svg>",
    ]
    return "\n".join(out)


def _legend(colours: Mapping[str, str]) -> tuple[list[str], float]:
    items = [(f"{region} (acks, lag)", "line", c) for region, c in colours.items()]
    items += [
        ("latency p50", "line", "#24292f"),
        ("latency max", "dash", "#8c959f"),
        ("refusal", "tick", RED),
        *[(name, "line", colour) for name, colour in _MARKERS],
        ("RTO: failure → first ack on new leader", "shade", RED),
    ]
    out, px, row = [], LEFT, 0
    for label, style, colour in items:
        width = 26 + 6.2 * len(label) + 16
        if px + width > WIDTH - RIGHT and px > LEFT:
            px, row = LEFT, row + 1
        y = 12 + row * 16
        if style == "shade":
            out.append(
                f'<rect x="{_f(px)}" y="{y - 8}" width="20" height="10" fill="{colour}"'
                ' fill-opacity="0.12" stroke="none"/>'
            )
        elif style == "tick":
            out.append(
                f'<path d="M{_f(px + 10)} {y + 2}v-9" stroke="{colour}" stroke-width="1.5"/>'
            )
        else:
            dash = ' stroke-dasharray="4 3"' if style == "dash" else ""
            out.append(f'<path d="M{_f(px)} {y - 3}h20" stroke="{colour}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{_f(px + 26)}" y="{y + 1}">{_e(label)}</text>')
        px += width
    return out, 12 + row * 16 + 8


def _panel(
    top: float, title: str, ticks: Sequence[float], y: _Scale, label: Callable[[float], str]
) -> list[str]:
    out = [
        f'<text x="{_f(LEFT)}" y="{_f(top - 8)}" font-weight="600">{_e(title)}</text>',
        f'<rect x="{_f(LEFT)}" y="{_f(top)}" width="{_f(WIDTH - RIGHT - LEFT)}"'
        f' height="{_f(PANEL_H)}" fill="none" stroke="#d0d7de"/>',
    ]
    for tick in ticks:
        py = _f(y(tick))
        out.append(f'<path d="M{_f(LEFT)} {py}H{_f(WIDTH - RIGHT)}" stroke="#eaeef2"/>')
        out.append(
            f'<text x="{_f(LEFT - 6)}" y="{py}" dy="0.32em" text-anchor="end">'
            f"{_e(label(tick))}</text>"
        )
    return out


def _no_data(top: float) -> str:
    return (
        f'<text x="{_f((LEFT + WIDTH - RIGHT) / 2)}" y="{_f(top + PANEL_H / 2)}"'
        f' text-anchor="middle" fill="#6e7781" font-style="italic">{NO_DATA}</text>'
    )


def _ack_rate_panel(tl: _Timeline, x: _Scale, top: float, colours: Mapping[str, str]) -> list[str]:
    counts: dict[str, Counter[int]] = defaultdict(Counter)
    for t, _, region in tl.acks:
        counts[region][_bin(t)] += 1
    peak = max((n for c in counts.values() for n in c.values()), default=0) / BIN_SECONDS
    top_value, ticks = _nice_top(peak)
    y = _Scale(0.0, top_value, top + PANEL_H, top)
    title = f"acknowledged requests per second (orders and cancels, {BIN_SECONDS:g} s bins)"
    out = _panel(top, title, ticks if counts else [], y, lambda v: f"{v:g}/s")
    if not counts:
        return [*out, _no_data(top)]
    first, last = _bin(x.lo), _bin(x.hi) + 1
    for region, count in sorted(counts.items()):
        d = [f"M{_f(x(first * BIN_SECONDS))} {_f(y(0))}"]
        d += [
            f"V{_f(y(count[b] / BIN_SECONDS))}H{_f(x((b + 1) * BIN_SECONDS))}"
            for b in range(first, last)
        ]
        summary = (
            f"{region}: {sum(count.values())} acks, peak {max(count.values()) / BIN_SECONDS:g}/s"
        )
        out.append(
            f'<path d="{"".join(d)}V{_f(y(0))}Z" fill="{colours[region]}" fill-opacity="0.15"'
            f' stroke="{colours[region]}" stroke-width="1.5"><title>{_e(summary)}</title></path>'
        )
    return out


def _latency_panel(tl: _Timeline, x: _Scale, top: float) -> list[str]:
    bins: dict[int, list[float]] = defaultdict(list)
    for t, ms, _ in tl.acks:
        if ms is not None:
            bins[_bin(t)].append(max(ms, 0.0))
    lo, hi, ticks = _log_range([v for vs in bins.values() for v in vs])
    y = _Scale(lo, hi, top + PANEL_H, top, log=True)
    title = (
        "ack latency, log scale (p50 and max per bin); red ticks: refused or unanswered attempts"
    )
    out = _panel(top, title, ticks if bins else [], y, _ms_label)
    if not bins and not tl.refusals:
        return [*out, _no_data(top)]
    if bins:
        span = range(min(bins), max(bins) + 1)
        centre = {b: x((b + 0.5) * BIN_SECONDS) for b in span}
        stats = {b: (sorted(v)[-(-len(v) // 2) - 1], max(v)) for b, v in bins.items()}
        for which, colour, dash, name in (
            (1, "#8c959f", ' stroke-dasharray="4 3"', "max"),
            (0, "#24292f", "", "p50"),
        ):
            d = _path([(centre[b], y(stats[b][which])) if b in stats else None for b in span])
            out.append(
                f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.5"{dash}'
                f' stroke-linecap="round"><title>ack latency {name} per bin</title></path>'
            )
    if tl.refusals:
        d = "".join(f"M{_f(x(t))} {_f(top + PANEL_H)}v-8" for t, _ in tl.refusals)
        codes = ", ".join(f"{code} ×{n}" for code, n in Counter(c for _, c in tl.refusals).items())
        out.append(
            f'<path d="{d}" stroke="{RED}" stroke-width="1.2"><title>'
            f"{len(tl.refusals)} refusals: {_e(codes)}</title></path>"
        )
    return out


def _lag_panel(tl: _Timeline, x: _Scale, top: float, colours: Mapping[str, str]) -> list[str]:
    series: dict[str, list[tuple[float, float | None, float | None]]] = defaultdict(list)
    for t, region, seconds, records in sorted(tl.lag, key=lambda sample: sample[0]):
        series[region].append((t, records, seconds))
    known = {
        region: [(t, r, s) for t, r, s in samples if r is not None]
        for region, samples in series.items()
    }
    peak = max((r for samples in known.values() for _, r, _ in samples), default=0.0)
    peak_known = any(known.values())
    top_value, ticks = _nice_top(peak)
    y = _Scale(0.0, top_value, top + PANEL_H, top)
    title = "standby lag in records per region (seconds on hover)"
    out = _panel(top, title, ticks if peak_known else [], y, lambda v: f"{v:g}")
    if not peak_known:
        return [*out, _no_data(top)]
    for region, samples in sorted(series.items()):
        colour = colours[region]
        # a sample without a record count is a gap in what we know, not a zero
        d = _path([None if r is None else (x(t), y(r)) for t, r, _ in samples])
        out.append(
            f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.5"'
            f' stroke-linecap="round"><title>{_e(region)} lag</title></path>'
        )
        if len(known[region]) <= 400:
            out += [
                f'<circle cx="{_f(x(t))}" cy="{_f(y(r))}" r="2" fill="{colour}"><title>{_e(region)}'
                f" at {t:.2f} s: {r:g} records, {_num(s, 3, 's')} behind</title></circle>"
                for t, r, s in known[region]
            ]
    return out


def _rto_span(
    result: Mapping[str, Any], tl: _Timeline, x: _Scale, label_y: float, top: float, bottom: float
) -> list[str]:
    failure = tl.events.get("failure")
    if failure is None:
        return []
    end = tl.events.get("first_ack_new")
    rto = _number(result.get("rto_seconds"))
    if end is None and rto is not None:
        end = failure + rto
    if end is None:
        if result.get("failover_expected") is not True:
            return []
        end, label = x.hi, "RTO: not recovered"
    else:
        label = f"RTO {(rto if rto is not None else end - failure):.2f} s"
    x0, x1 = x(failure), x(max(end, failure))
    mid = min(max((x0 + x1) / 2, LEFT + 40), WIDTH - RIGHT - 40)
    return [
        f'<rect x="{_f(x0)}" y="{_f(top)}" width="{_f(max(x1 - x0, 1.0))}"'
        f' height="{_f(bottom - top)}" fill="{RED}" fill-opacity="0.12">'
        f"<title>{_e(label)}</title></rect>",
        f'<path d="M{_f(x0)} {_f(label_y + 3)}H{_f(x1)}" stroke="{RED}" stroke-width="1.5"/>',
        f'<text x="{_f(mid)}" y="{_f(label_y)}" text-anchor="middle" fill="{RED}"'
        f' font-weight="600">{_e(label)}</text>',
    ]


def _markers(tl: _Timeline, x: _Scale, first_row: float, bottom: float) -> list[str]:
    out = []
    for row, (name, colour) in enumerate(_MARKERS):
        at = tl.events.get(name)
        if at is None:
            continue
        px, py = x(at), first_row + row * ROW_H
        right = px > LEFT + 0.8 * (WIDTH - RIGHT - LEFT)
        anchor = f'x="{_f(px - 3)}" text-anchor="end"' if right else f'x="{_f(px + 3)}"'
        out += [
            f'<path d="M{_f(px)} {_f(py - 8)}V{_f(bottom)}" stroke="{colour}" stroke-width="1.5">'
            f"<title>{name} at {at:.2f} s</title></path>",
            f'<text {anchor} y="{_f(py)}" fill="{colour}">{name} {at:.2f} s</text>',
        ]
    return out


def _time_grid(x: _Scale, tops: Sequence[float]) -> list[str]:
    d = "".join(
        f"M{_f(x(tick))} {_f(top)}v{_f(PANEL_H)}"
        for tick in _nice_ticks(x.lo, x.hi, 10)
        for top in tops
    )
    return [f'<path d="{d}" stroke="#eaeef2"/>']


def _time_axis(x: _Scale, bottom: float) -> list[str]:
    out = []
    for tick in _nice_ticks(x.lo, x.hi, 10):
        px = _f(x(tick))
        out += [
            f'<path d="M{px} {_f(bottom)}v5" stroke="#57606a"/>',
            f'<text x="{px}" y="{_f(bottom + 17)}" text-anchor="middle">{tick:g}</text>',
        ]
    centre = _f((LEFT + WIDTH - RIGHT) / 2)
    out.append(
        f'<text x="{centre}" y="{_f(bottom + 36)}" text-anchor="middle"'
        ' fill="#57606a">seconds since the drill started</text>'
    )
    return out
