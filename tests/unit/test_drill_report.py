"""Drill reports are written, self-contained, escaped, and survive drills that measured nothing."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from infra.drills.report import (
    format_summary,
    format_table,
    render_html,
    summarize,
    write_report,
)


def drill(**overrides: Any) -> dict[str, Any]:
    acks = [[i * 0.05, 8.0 + (i % 5), "primary"] for i in range(80)]
    acks += [[4.85 + i * 0.05, 40.0 if i < 4 else 11.0, "standby"] for i in range(140)]
    result: dict[str, Any] = {
        "kind": "unplanned",
        "mode": "sync",
        "rate": 200.0,
        "seconds": 12.0,
        "started_at": "2026-11-25T15:40:00Z",
        "passed": True,
        "failures": [],
        "failover_expected": True,
        "rto_seconds": 0.85,
        "sent": 2400,
        "acked": 2390,
        "lost": 0,
        "duplicated": 0,
        "phantom": 0,
        "cancels_sent": 300,
        "cancels_acked": 290,
        "cancels_lost": 0,
        "refused": 3,
        "refused_window_seconds": 0.6,
        "ack_p50_ms": 12.3,
        "ack_p99_ms": 80.1,
        "epoch_before": 1,
        "epoch_after": 2,
        "leader_before": "primary",
        "leader_after": "standby",
        "audit": {"accounts": 4, "positions": 8, "trades": 120, "mismatches": []},
        "state_hashes": {"primary": "ab12", "standby": "ab12"},
        "steps": [
            {"t": 4.0, "text": "primary killed with SIGKILL"},
            {"t": 4.7, "text": "standby promoted"},
        ],
        "events": {"failure": 4.0, "promotion": 4.7, "first_ack_new": 4.85, "healed": 9.0},
        "timeline": {
            "acks": acks,
            "refusals": [[4.1, "not_leader"], [4.3, "timeout"], [4.6, "not_leader"]],
            "lag": [[t / 4, "standby", 0.01, 3] for t in range(16)]
            + [[t / 4, "primary", 0.2, 120 - t] for t in range(36, 48)],
        },
    }
    result.update(overrides)
    return result


class TagBalance(HTMLParser):
    """Every element that is opened is closed in order: enough to call the page well-formed."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.errors.append(tag)


def assert_well_formed(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    checker = TagBalance()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.open == []


def test_writes_the_json_and_a_matching_page(tmp_path: Path) -> None:
    result = drill()
    json_path, html_path = write_report(result, tmp_path / "reports" / "nested")
    assert re.fullmatch(r"unplanned-20261125T154000Z-[0-9a-f]{6}\.json", json_path.name)
    assert html_path == json_path.with_suffix(".html")
    assert json.loads(json_path.read_text()) == result
    assert html_path.read_text() == render_html(result)


def test_two_reports_of_one_drill_do_not_overwrite_each_other(tmp_path: Path) -> None:
    first, _ = write_report(drill(), tmp_path)
    second, _ = write_report(drill(), tmp_path)
    assert first != second
    assert len(list(tmp_path.iterdir())) == 4


def test_the_page_shows_verdict_figures_and_the_timeline_markers() -> None:
    page = render_html(drill())
    assert_well_formed(page)
    assert "PASSED" in page and "2026-11-25T15:40:00Z" in page
    assert "RTO 0.85 s" in page
    for marker in ("failure 4.00 s", "promotion 4.70 s", "healed 9.00 s"):
        assert marker in page
    assert page.count("<svg") == 1
    assert "acknowledged requests per second" in page and "standby lag in records" in page
    assert "3 refusals: not_leader ×2, timeout ×1" in page
    assert "equal" in page and "1 → 2" in page


def test_the_page_loads_nothing_from_anywhere() -> None:
    page = render_html(drill())
    assert "http" not in page and "@import" not in page
    assert not re.search(r"\bsrc\s*=", page)
    # the chart's markers and clip paths refer to elements of the page itself, by id
    references = re.findall(r"\bhref\s*=\s*\"([^\"]*)\"|url\(([^)]*)\)", page)
    ids = set(re.findall(r'\bid="([^"]+)"', page))
    assert references
    for href, url in references:
        target = href or url
        assert target.startswith("#") and target[1:] in ids, target


def test_a_failed_drill_lists_its_failures_and_the_differing_hashes() -> None:
    page = render_html(
        drill(
            passed=False,
            failures=["lost 2 acknowledged orders"],
            lost=2,
            state_hashes={"primary": "ab12", "standby": "cd34"},
        )
    )
    assert "FAILED" in page and "PASSED" not in page
    assert "lost 2 acknowledged orders" in page
    assert "DIFFERENT" in page
    assert '<td class="bad">0 / 0 / 0' not in page and '<td class="bad">2 / 0 / 0' in page


def test_every_string_from_the_drill_is_escaped() -> None:
    hostile = "<script>alert('x')</script>"
    page = render_html(
        drill(
            kind=hostile,
            passed=False,
            failures=[hostile],
            steps=[{"t": 1.0, "text": hostile}, hostile],
            leader_after=hostile,
            timeline={"acks": [[1.0, 5.0, hostile]], "refusals": [[2.0, hostile]], "lag": []},
        )
    )
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert_well_formed(page)


def test_drill_text_is_shown_as_it_is_never_as_a_formula() -> None:
    timeline = {"acks": [[1.0, 5.0, "cost $5 or $6"]], "refusals": [[2.0, "$x$"]], "lag": []}
    page = render_html(drill(timeline=timeline))
    assert "cost $5 or $6 (acks, lag)" in page and "1 refusals: $x$ ×1" in page


@pytest.mark.parametrize(
    "timeline",
    [{}, None, {"acks": [], "refusals": [], "lag": []}, {"acks": [[None, 1.0, "x"], "junk"]}],
)
def test_a_drill_that_measured_nothing_still_renders(timeline: Any) -> None:
    page = render_html(
        drill(
            timeline=timeline,
            events={"failure": None, "promotion": None, "first_ack_new": None, "healed": None},
            rto_seconds=None,
            ack_p50_ms=None,
            audit=None,
            steps=[],
        )
    )
    assert_well_formed(page)
    assert page.count("no data") >= 5  # three panels, latency, audit, steps
    assert "never recovered" in page
    assert "RTO 0." not in page


def test_a_bare_result_renders_and_formats() -> None:
    page = render_html({"kind": "replay"})
    assert_well_formed(page)
    assert "FAILED" in page and "no data" in page
    assert "replay" in format_table({"kind": "replay"})


def test_a_failure_without_recovery_is_shaded_to_the_end() -> None:
    page = render_html(drill(rto_seconds=None, events={"failure": 4.0}))
    assert "RTO: not recovered" in page


def test_the_terminal_table_answers_the_3am_questions() -> None:
    table = format_table(drill())
    lines = table.splitlines()
    assert 5 <= len(lines) <= 10
    assert lines[0].split() == ["drill", "unplanned", "PASSED"]
    assert "0.85 s" in table and "2390 of 2400" in table and "0 / 0 / 0" in table
    assert "0.60 s" in table and "1 -> 2" in table
    assert "audit mismatches  0" in table and lines[-1].startswith("ack p50/p99")
    failed = format_table(drill(passed=False, failures=["2 lost"]))
    assert failed.splitlines()[-1].split() == ["failure", "2", "lost"]


def test_summary_takes_nearest_rank_percentiles_over_recovered_drills() -> None:
    results = [drill(rto_seconds=float(n)) for n in range(1, 11)]
    results.append(drill(kind="replay", rto_seconds=None, failover_expected=False))
    summary = summarize(results)
    assert summary["drills"] == 11
    assert summary["rto_drills"] == 10
    assert summary["rto_p50"] == 5.0
    assert summary["rto_p99"] == 10.0
    assert summary["rto_max"] == 10.0
    assert summarize([drill(rto_seconds=0.5)])["rto_p99"] == 0.5


def test_summary_totals_losses_and_names_the_failures() -> None:
    results = [
        drill(),
        drill(
            passed=False,
            failures=["lost 2 acknowledged orders", "audit mismatch"],
            lost=2,
            phantom=1,
            cancels_lost=3,
            audit={"mismatches": [{"account": "a"}, {"account": "b"}]},
        ),
        drill(kind="planned", duplicated=4),
        drill(passed=False, failures=[], lost=None),
    ]
    summary = summarize(results)
    counts = {k: (v["count"], v["passed"]) for k, v in summary["kinds"].items()}
    assert counts == {"unplanned": (3, 1), "planned": (1, 1)}
    assert summary["kinds"]["planned"]["rto_max"] == 0.85
    assert (summary["lost"], summary["duplicated"], summary["phantom"]) == (2, 4, 1)
    assert summary["cancels_lost"] == 3
    assert summary["audit_mismatches"] == 2
    assert summary["failed"] == [
        "unplanned #2: lost 2 acknowledged orders",
        "unplanned #3: failed, no reason recorded",
    ]
    assert summary["passed"] is False
    text = format_summary(summary)
    assert "FAILED" in text and "unplanned #2: lost 2 acknowledged orders" in text
    assert "lost 2" in text and "audit mismatches 2" in text


def test_summary_of_nothing_has_no_percentiles_and_is_no_pass() -> None:
    summary = summarize([])
    assert summary["rto_p50"] is None and summary["rto_p99"] is None and summary["rto_max"] is None
    assert summary["passed"] is False
    assert "no data" in format_summary(summary)
    passing = summarize([drill(), drill(kind="planned")])
    assert passing["passed"] is True and passing["failed"] == []
    assert "PASSED" in format_summary(passing)


def test_nothing_touches_its_input(tmp_path: Path) -> None:
    results = [drill(), drill(passed=False, failures=["x"], rto_seconds=None)]
    before = copy.deepcopy(results)
    for result in results:
        write_report(result, tmp_path)
        format_table(result)
    format_summary(summarize(results))
    assert results == before


def test_headline_rto_counts_only_failovers_but_every_kind_has_its_own() -> None:
    results = [
        drill(rto_seconds=0.9),
        drill(kind="broker-loss", failover_expected=False, rto_seconds=1.2),
        drill(kind="replay", failover_expected=False, rto_seconds=None),
    ]
    summary = summarize(results)
    assert summary["rto_max"] == 0.9 and summary["rto_drills"] == 1
    assert summary["kinds"]["broker-loss"]["rto_max"] == 1.2
    assert "rto_max" not in summary["kinds"]["replay"]
    assert "broker-loss" in format_summary(summary)
