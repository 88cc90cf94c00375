"""The drill timeline as inline SVG drawn by matplotlib: acks per second, ack latency, standby lag;
the fault, the promotion, the heal and the RTO marked across all three panels.

matplotlib's SVG backend needs no display and no raster (Agg) backend; the SVG is inlined
without its XML prologue, metadata and namespace declarations, so the report stays one file
that refers to nothing but itself (clip paths and markers are `#id` references inside it).
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogLocator, NullFormatter

from infra.drills.fmt import NO_DATA, as_number, mapping, text

BIN_SECONDS = 0.25
RED, GREEN, BLUE = "#cf222e", "#1a7f37", "#0969da"
REGION_COLOURS = ("#8250df", "#d4760a", "#1b9e77", "#bf3989", "#6e7781", "#953800")
_EVENT_KEYS = ("failure", "promotion", "first_ack_new", "healed")
_MARKERS = (("failure", RED), ("promotion", GREEN), ("healed", BLUE))


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


def _bin(t: float) -> int:
    return math.floor(t / BIN_SECONDS)


def _ms_label(value: float, _: object = None) -> str:
    return f"{value:g} ms" if value < 1000 else f"{value / 1000:g} s"


def _no_data(ax: Axes) -> None:
    ax.set_yticks([])
    ax.text(
        0.5,
        0.5,
        NO_DATA,
        transform=ax.transAxes,
        ha="center",
        va="center",
        color="#6e7781",
        style="italic",
    )


def render_timeline_svg(result: dict[str, Any]) -> str:
    """Three panels on one time axis: ack rate, ack latency with refusals, standby lag."""
    tl = _parse_timeline(result)
    times = [a[0] for a in tl.acks] + [r[0] for r in tl.refusals] + [s[0] for s in tl.lag]
    times += list(tl.events.values())
    lo = min([0.0, *times])
    hi = max([lo + 1.0, as_number(result.get("seconds")) or 0.0, *times])
    colours = {r: REGION_COLOURS[i % len(REGION_COLOURS)] for i, r in enumerate(tl.regions)}
    with matplotlib.rc_context(
        {
            "svg.fonttype": "none",  # text stays text: searchable, selectable, small
            "svg.hashsalt": "exchange-dr",  # ids derived from content: one drill, one page
            "text.parse_math": False,  # drill data is text: a `$` in it starts no formula
            "font.size": 8.0,
            "axes.titlesize": 8.5,
            "axes.titlelocation": "left",
            "axes.edgecolor": "#d0d7de",
            "grid.color": "#eaeef2",
            "xtick.color": "#57606a",
            "ytick.color": "#57606a",
        }
    ):
        fig = Figure(figsize=(10.0, 7.4), layout="constrained")
        axes = fig.subplots(3, 1, sharex=True)
        _ack_rate_panel(axes[0], tl, colours, lo, hi)
        _latency_panel(axes[1], tl)
        _lag_panel(axes[2], tl, colours)
        for ax in axes:
            ax.set_xlim(lo, hi)
            ax.grid(True, linewidth=0.6)
        axes[2].set_xlabel("seconds since the drill started", color="#57606a")
        legend = [Line2D([], [], color=c, label=f"{r} (acks, lag)") for r, c in colours.items()]
        legend += _latency_legend(tl)
        legend += _mark_events(result, tl, axes, hi)
        fig.legend(handles=legend, loc="outside upper left", ncols=4, frameon=False)
        out = io.StringIO()
        fig.savefig(out, format="svg", metadata={"Date": None})
    return _inline(out.getvalue())


def _inline(svg: str) -> str:
    """matplotlib's SVG file as an element of the page: from `<svg` on, without metadata or
    namespace declarations (HTML knows its SVG elements), `href` in SVG 2's spelling."""
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    svg = svg.replace("xlink:href=", "href=")
    return svg.replace("<svg ", '<svg role="img" aria-label="timeline of the drill" ', 1)


def _ack_rate_panel(
    ax: Axes, tl: _Timeline, colours: Mapping[str, str], lo: float, hi: float
) -> None:
    ax.set_title(f"acknowledged requests per second (orders and cancels, {BIN_SECONDS:g} s bins)")
    if not tl.acks:
        return _no_data(ax)
    edges = [b * BIN_SECONDS for b in range(_bin(lo), _bin(hi) + 2)]
    for region, colour in colours.items():
        at = [t for t, _, r in tl.acks if r == region]
        weights = [1 / BIN_SECONDS] * len(at)
        ax.hist(at, edges, weights=weights, histtype="stepfilled", color=colour, alpha=0.15)
        ax.hist(at, edges, weights=weights, histtype="step", color=colour, linewidth=1.2)
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter("{x:g}/s")
    return None


def _latency_panel(ax: Axes, tl: _Timeline) -> None:
    ax.set_title(
        "ack latency, log scale (p50 and max per bin); red ticks: refused or unanswered attempts"
    )
    bins: dict[int, list[float]] = defaultdict(list)
    for t, ms, _ in tl.acks:
        if ms is not None:
            bins[_bin(t)].append(max(ms, 0.01))  # a log axis has no zero
    if not bins and not tl.refusals:
        return _no_data(ax)
    if bins:
        span = range(min(bins), max(bins) + 1)
        centres = [(b + 0.5) * BIN_SECONDS for b in span]
        values = [sorted(bins.get(b, [])) for b in span]
        p50 = [v[-(-len(v) // 2) - 1] if v else math.nan for v in values]
        peak = [v[-1] if v else math.nan for v in values]
        ax.plot(centres, peak, color="#8c959f", linestyle="--", linewidth=1.2)
        ax.plot(centres, p50, color="#24292f", linewidth=1.2, marker=".", markersize=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(_ms_label)
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        _no_data(ax)
    if tl.refusals:
        at = [t for t, _ in tl.refusals]
        # x in seconds, y in axes units: short ticks along the bottom whatever the scale
        ax.plot(
            at, [0.0] * len(at), "|", color=RED, markersize=8, transform=ax.get_xaxis_transform()
        )
    return None


def _latency_legend(tl: _Timeline) -> list[Line2D]:
    codes = Counter(code for _, code in tl.refusals)
    refusals = f"{len(tl.refusals)} refusals: " + ", ".join(f"{c} ×{n}" for c, n in codes.items())
    return [
        Line2D([], [], color="#24292f", label="latency p50"),
        Line2D([], [], color="#8c959f", linestyle="--", label="latency max"),
        Line2D(
            [],
            [],
            color=RED,
            marker="|",
            linestyle="none",
            label=refusals if tl.refusals else "refusal",
        ),
    ]


def _lag_panel(ax: Axes, tl: _Timeline, colours: Mapping[str, str]) -> None:
    ax.set_title("standby lag in records per region")
    series: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for t, region, _, records in sorted(tl.lag, key=lambda sample: sample[0]):
        series[region].append((t, records))
    known = {region: sum(r is not None for _, r in samples) for region, samples in series.items()}
    if not any(known.values()):
        return _no_data(ax)
    for region, samples in sorted(series.items()):
        # a sample without a record count is a gap in what we know, not a zero
        ys = [math.nan if r is None else r for _, r in samples]
        dots = "." if known[region] <= 400 else ""
        ax.plot([t for t, _ in samples], ys, color=colours[region], marker=dots, linewidth=1.2)
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter("{x:g}")
    return None


def _mark_events(
    result: Mapping[str, Any], tl: _Timeline, axes: Sequence[Axes], hi: float
) -> list[Any]:
    """Failure, promotion and heal as lines across the panels, the RTO as a shaded span."""
    legend: list[Any] = []
    for name, colour in _MARKERS:
        at = tl.events.get(name)
        if at is not None:
            for ax in axes:
                ax.axvline(at, color=colour, linewidth=1.2)
            legend.append(Line2D([], [], color=colour, label=f"{name} {at:.2f} s"))
    failure = tl.events.get("failure")
    if failure is None:
        return legend
    end = tl.events.get("first_ack_new")
    rto = as_number(result.get("rto_seconds"))
    if end is None and rto is not None:
        end = failure + rto
    if end is None:
        if result.get("failover_expected") is not True:
            return legend
        end, label = hi, "RTO: not recovered"
    else:
        label = f"RTO {(rto if rto is not None else end - failure):.2f} s"
    for ax in axes:
        ax.axvspan(failure, max(end, failure), color=RED, alpha=0.12, linewidth=0)
    legend.append(Patch(color=RED, alpha=0.12, label=f"{label}: failure → first ack on new leader"))
    return legend
