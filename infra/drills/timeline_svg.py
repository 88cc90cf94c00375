"""The drill timeline as inline SVG: acks per second, ack latency, standby lag; the fault, the
promotion, the heal and the RTO marked across all three panels. No plotting library."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infra.drills.fmt import NO_DATA, as_number, escape, mapping, num, text

BIN_SECONDS = 0.25
RED, GREEN, BLUE = "#cf222e", "#1a7f37", "#0969da"
REGION_COLOURS = ("#8250df", "#d4760a", "#1b9e77", "#bf3989", "#6e7781", "#953800")

WIDTH, LEFT, RIGHT = 960.0, 78.0, 24.0
PANEL_H, PANEL_GAP, ROW_H, AXIS_H = 120.0, 34.0, 13.0, 44.0


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
    raw = mapping(result.get("timeline"))

    def rows(key: str, width: int) -> list[tuple[float, list[object]]]:
        """(t, the other fields padded with None to `width`); rows without a time are dropped."""
        found = raw.get(key)
        parsed = []
        for row in found if isinstance(found, list | tuple) else []:
            t = as_number(row[0]) if isinstance(row, list | tuple) and row else None
            if t is not None:
                parsed.append((t, [*row[1:], *[None] * width][:width]))
        return parsed

    events = mapping(result.get("events"))
    return _Timeline(
        acks=[(t, as_number(ms), text(r, "?")) for t, (ms, r) in rows("acks", 2)],
        refusals=[(t, text(code, "?")) for t, (code,) in rows("refusals", 1)],
        lag=[(t, text(r, "?"), as_number(s), as_number(n)) for t, (r, s, n) in rows("lag", 3)],
        events={
            k: v for k, v in ((k, as_number(events.get(k))) for k in _EVENT_KEYS) if v is not None
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
    hi = max([lo + 1.0, as_number(result.get("seconds")) or 0.0, *times])
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
        out.append(f'<text x="{_f(px + 26)}" y="{y + 1}">{escape(label)}</text>')
        px += width
    return out, 12 + row * 16 + 8


def _panel(
    top: float, title: str, ticks: Sequence[float], y: _Scale, label: Callable[[float], str]
) -> list[str]:
    out = [
        f'<text x="{_f(LEFT)}" y="{_f(top - 8)}" font-weight="600">{escape(title)}</text>',
        f'<rect x="{_f(LEFT)}" y="{_f(top)}" width="{_f(WIDTH - RIGHT - LEFT)}"'
        f' height="{_f(PANEL_H)}" fill="none" stroke="#d0d7de"/>',
    ]
    for tick in ticks:
        py = _f(y(tick))
        out.append(f'<path d="M{_f(LEFT)} {py}H{_f(WIDTH - RIGHT)}" stroke="#eaeef2"/>')
        out.append(
            f'<text x="{_f(LEFT - 6)}" y="{py}" dy="0.32em" text-anchor="end">'
            f"{escape(label(tick))}</text>"
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
            f' stroke="{colours[region]}" stroke-width="1.5">'
            f"<title>{escape(summary)}</title></path>"
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
            f"{len(tl.refusals)} refusals: {escape(codes)}</title></path>"
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
            f' stroke-linecap="round"><title>{escape(region)} lag</title></path>'
        )
        if len(known[region]) <= 400:
            out += [
                f'<circle cx="{_f(x(t))}" cy="{_f(y(r))}" r="2" fill="{colour}">'
                f"<title>{escape(region)}"
                f" at {t:.2f} s: {r:g} records, {num(s, 3, 's')} behind</title></circle>"
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
    rto = as_number(result.get("rto_seconds"))
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
        f"<title>{escape(label)}</title></rect>",
        f'<path d="M{_f(x0)} {_f(label_y + 3)}H{_f(x1)}" stroke="{RED}" stroke-width="1.5"/>',
        f'<text x="{_f(mid)}" y="{_f(label_y)}" text-anchor="middle" fill="{RED}"'
        f' font-weight="600">{escape(label)}</text>',
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
