"""Drill reports: the raw result for scripts, one self-contained page and short tables for people.

The page has no external resources (inline CSS, the timeline as inline SVG from matplotlib) so it
can be attached to an incident ticket or opened offline years later. Every string that came from
a drill is escaped.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra.drills.fmt import (
    NO_DATA,
    as_number,
    escape,
    hashes_equal,
    mapping,
    mismatches_of,
    nearest_rank,
    num,
    positive,
    rto_text,
    stamp,
    text,
    total,
    verdict_of,
)
from infra.drills.timeline_svg import GREEN, RED, render_timeline_svg


def write_report(result: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """Keep every drill's evidence: `<kind>-<start>-<6 hex>.json` and a matching `.html`."""
    directory.mkdir(parents=True, exist_ok=True)
    kind = re.sub(r"[^A-Za-z0-9_-]+", "-", str(result.get("kind") or "drill")).strip("-")
    stem = f"{kind or 'drill'}-{stamp(result.get('started_at'))}"
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
    kind = escape(text(result.get("kind"), "drill"))
    started = escape(text(result.get("started_at"), "unknown start"))
    verdict = verdict_of(result)
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
            f'<p class="sub">started {started} · {escape(_load_line(result))}</p>',
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
    mismatches = mismatches_of(result)
    rows = [
        ("drill", f"{text(get('kind'), 'drill')}  {verdict_of(result)}"),
        ("rto", rto_text(result)),
        ("acked", f"{num(get('acked'))} of {num(get('sent'))} sent"),
        ("load", f"{num(get('answered_per_second'))}/s answered of {num(get('rate'))}/s offered"),
        ("lost/dup/phantom", " / ".join(num(get(k)) for k in ("lost", "duplicated", "phantom"))),
        ("cancels lost", num(get("cancels_lost"))),
        ("refused", f"{num(get('refused'))} over {num(get('refused_window_seconds'), 2, 's')}"),
        ("epoch", f"{num(get('epoch_before'))} -> {num(get('epoch_after'))}"),
        ("audit mismatches", NO_DATA if mismatches is None else str(len(mismatches))),
        (
            "ack p50/p99",
            f"{num(get('ack_p50_ms'), 1, 'ms')} / {num(get('ack_p99_ms'), 1, 'ms')}",
        ),
    ]
    if get("profile"):
        rpo = "" if get("rpo_guaranteed", True) else " (RPO not guaranteed while degraded)"
        rows.insert(1, ("profile", f"{text(get('profile'), '?')}{rpo}"))
    views = mapping(get("read_models"))
    if "read_models_match" in result:
        rows.append(
            (
                "read models",
                f"{'match' if get('read_models_match') else 'DIFFER'} a projection from scratch "
                f"at seq {num(views.get('seq'))} ({num(views.get('orders'))} orders, "
                f"{num(views.get('trades'))} trades, {num(views.get('positions'))} positions, "
                f"{num(views.get('balances'))} balances; waited "
                f"{num(views.get('waited_s'), 2, 's')}, checked in "
                f"{num(views.get('checked_s'), 2, 's')})",
            )
        )
    quorum = get("quorum_replicas")
    if isinstance(quorum, list):
        rows.append(("quorum held by", ", ".join(str(r) for r in quorum) or "nobody"))
    failures = get("failures")
    if isinstance(failures, list):
        rows += [("failure", text(f, "?")) for f in failures]
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
        kind = text(result.get("kind"), "drill")
        tally = kinds.setdefault(kind, {"count": 0, "passed": 0})
        tally["count"] += 1
        if result.get("passed") is True:
            tally["passed"] += 1
        else:
            failures = result.get("failures")
            reason = str(failures[0]) if isinstance(failures, list) and failures else None
            failed.append(f"{kind} #{tally['count']}: {reason or 'failed, no reason recorded'}")
        rto = as_number(result.get("rto_seconds"))
        if rto is not None:
            per_kind.setdefault(kind, []).append(rto)
            if result.get("failover_expected", True) is not False:
                rtos.append(rto)
    for kind, values in per_kind.items():
        values.sort()
        kinds[kind]["rto_p50"] = nearest_rank(values, 50)
        kinds[kind]["rto_max"] = values[-1]
    rtos.sort()
    return {
        "drills": len(results),
        "kinds": kinds,
        "rto_drills": len(rtos),
        "rto_p50": nearest_rank(rtos, 50),
        "rto_p99": nearest_rank(rtos, 99),
        "rto_max": rtos[-1] if rtos else None,
        "lost": total(results, "lost"),
        "duplicated": total(results, "duplicated"),
        "phantom": total(results, "phantom"),
        "cancels_lost": total(results, "cancels_lost"),
        "audit_mismatches": sum(len(mismatches_of(r) or []) for r in results),
        "failed": failed,
        # no drills run is not a pass
        "passed": bool(results) and not failed,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few readable lines, failures last so they are what the eye lands on."""
    get = summary.get
    verdict = "PASSED" if get("passed") is True else "FAILED"
    kinds = mapping(get("kinds"))
    width = max([len(str(kind)) for kind in kinds] + [4])
    lines = [f"drills: {num(get('drills'))}  {verdict}"]
    lines += [
        f"  {kind:<{width}}  "
        + f"{num(tally.get('passed'))}/{num(tally.get('count'))} passed".ljust(14)
        + (
            f"  rto p50 {num(tally.get('rto_p50'), 2, 's')} max {num(tally.get('rto_max'), 2, 's')}"
            if tally.get("rto_max") is not None
            else ""
        )
        for kind, tally in kinds.items()
        if isinstance(tally, Mapping)
    ]
    lines.append(
        f"rto: p50 {num(get('rto_p50'), 2, 's')}  p99 {num(get('rto_p99'), 2, 's')}"
        f"  max {num(get('rto_max'), 2, 's')}  over {num(get('rto_drills'))} failover drills"
    )
    lines.append(
        f"lost {num(get('lost'))}  duplicated {num(get('duplicated'))}"
        f"  phantom {num(get('phantom'))}  cancels lost {num(get('cancels_lost'))}"
        f"  audit mismatches {num(get('audit_mismatches'))}"
    )
    failed = get("failed")
    if isinstance(failed, list) and failed:
        lines.append("failed:")
        lines += [f"  {line}" for line in failed]
    return "\n".join(line.rstrip() for line in lines)


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
        f"mode {text(get('mode'), NO_DATA)} · rate {num(get('rate'), None, 'orders/s')}"
        f" · {num(get('seconds'), None, 's')} of load · {expected}"
    )


_BAD = ' class="bad"'


def _figures_table(result: Mapping[str, Any]) -> str:
    get = result.get
    losses = [get("lost"), get("duplicated"), get("phantom")]
    mismatches = mismatches_of(result)
    audit = mapping(get("audit"))
    counted = ", ".join(f"{num(audit.get(k))} {k}" for k in ("accounts", "positions", "trades"))
    equal = hashes_equal(result)
    hashes = mapping(get("state_hashes"))
    listed = "; ".join(f"{region} {str(value)[:16]}" for region, value in hashes.items())
    rows = [
        ("RTO", escape(rto_text(result)), rto_text(result) == "never recovered"),
        ("sent / acked", escape(f"{num(get('sent'))} / {num(get('acked'))}"), False),
        (
            "requests answered / offered",
            escape(f"{num(get('answered_per_second'))}/s / {num(get('rate'))}/s"),
            False,
        ),
        (
            "lost / duplicated / phantom",
            escape(" / ".join(map(num, losses))),
            any(map(positive, losses)),
        ),
        (
            "cancels lost",
            escape(
                f"{num(get('cancels_lost'))} ({num(get('cancels_acked'))} of "
                f"{num(get('cancels_sent'))} cancels acked)"
            ),
            positive(get("cancels_lost")),
        ),
        (
            "refused / refused window",
            escape(f"{num(get('refused'))} / {num(get('refused_window_seconds'), 2, 's')}"),
            False,
        ),
        (
            "ack latency p50 / p99",
            escape(f"{num(get('ack_p50_ms'), 1, 'ms')} / {num(get('ack_p99_ms'), 1, 'ms')}"),
            False,
        ),
        (
            "epoch before → after",
            escape(f"{num(get('epoch_before'))} → {num(get('epoch_after'))}"),
            False,
        ),
        (
            "leader before → after",
            escape(f"{text(get('leader_before'), NO_DATA)} → {text(get('leader_after'), NO_DATA)}"),
            False,
        ),
        (
            "audit mismatches",
            escape(NO_DATA if mismatches is None else f"{len(mismatches)} ({counted})"),
            bool(mismatches),
        ),
        (
            "state hashes",
            escape({True: "equal", False: "DIFFERENT", None: NO_DATA}[equal])
            + (f" <code>{escape(listed)}</code>" if listed else ""),
            equal is False,
        ),
    ]
    body = "".join(
        f"<tr><th>{escape(label)}</th><td{_BAD if bad else ''}>{value}</td></tr>"
        for label, value, bad in rows
    )
    return f'<table class="figures">{body}</table>'


def _failures_section(result: Mapping[str, Any]) -> str:
    failures = result.get("failures")
    parts = []
    if isinstance(failures, list) and failures:
        items = "".join(f"<li>{escape(str(reason))}</li>" for reason in failures)
        parts.append(f'<h2>Failures</h2><ul class="failures">{items}</ul>')
    elif result.get("passed") is not True:
        parts.append('<h2>Failures</h2><p class="nodata">failed, no reason recorded</p>')
    mismatches = mismatches_of(result) or []
    if mismatches:
        shown = "".join(
            f"<li><code>{escape(json.dumps(m, default=str))}</code></li>" for m in mismatches[:50]
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
        at, said = (step.get("t"), step.get("text")) if isinstance(step, Mapping) else (None, step)
        at_text = num(at, 2, "s") if at is not None else "·"
        items.append(f'<li><span class="t">{escape(at_text)}</span> {escape(text(said, ""))}</li>')
    return f'<ol class="steps">{"".join(items)}</ol>'
