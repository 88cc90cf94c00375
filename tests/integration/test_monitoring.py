"""The monitoring files: alert rules checked and unit-tested by promtool, the Grafana dashboard
valid, and every metric they query one that our processes export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
RULES = MONITORING / "alerts.yml"
RULE_TESTS = MONITORING / "alerts_test.yml"
DASHBOARD = MONITORING / "grafana" / "exchange-dr.json"
# every module of the region processes may declare metrics (infra/metrics/, the API's own ...)
EXPORTERS = tuple(sorted((ROOT / "infra").rglob("*.py")))

# The metrics the rules and the dashboard may query: what the region processes export.
DOCUMENTED_METRICS = frozenset({
    "up",
    "matching_engine_standby_lag_seconds",
    "standby_lag_records",
    "wal_events_total",
    "wal_events_count",
    "wal_seq",
    "failover_total",
    "failover_info",
    "failover_rto_seconds",
    "replication_degraded",
    "replication_no_majority",
    "replication_acks_waiting",
    "replication_corrupt_records_total",
    "replication_rejected_total",
    "replication_peer_link_up",
    "replication_gap_fills_total",
    "standby_reseeds_total",
    "standby_reseed_blocked",
    "zookeeper_connected",
    "exdr_api_command_ack_seconds_bucket",
    "exdr_api_requests_total",
    "wal_retain_records",
    "wal_archive_last_seq",
    "wal_archive_segments",
    "wal_archive_bytes",
    "wal_archive_lag_records",
    "wal_archive_standby_released",
    "wal_archive_held_by_read_models",
    "wal_archive_read_models_seq",
    "wal_archive_errors_total",
    "projection_lag_records",
    "projection_confirmed_seq",
    "read_models_forks_total",
})
# Documented but not yet exported by infra/: the failover work adds them. Remove a name here
# once the code exports it.
PENDING_METRICS: frozenset[str] = frozenset()  # names documented before the code exports them
# Series Prometheus writes itself for every scrape target and for alerting.
PROMETHEUS_BUILTINS = frozenset({
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
    "ALERTS",
    "ALERTS_FOR_STATE",
})
REQUIRED_PANELS = (
    "Shard Status",
    "Standby Lag",
    "WAL Events",
    "Failover History",
    "Command Ack Latency",
    "RTO of the Last Failover",
    "Replication Degraded / Acks Waiting",
)
# Grafana's variables, replaced by plausible values before promtool parses a panel's query.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$shard": ".*",
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET = re.compile(r"\boffset\s+-?[\w$]+")
_IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset({
    "and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
    "group_right", "offset", "inf", "nan",
})
_FAMILY = re.compile(
    r"\b(GaugeMetricFamily|CounterMetricFamily|HistogramMetricFamily|SummaryMetricFamily"
    r"|InfoMetricFamily|StateSetMetricFamily|Gauge|Counter|Histogram|Summary|Info|Enum)"
    r'\(\s*"([A-Za-z_:][\w:]*)"'
)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, keywords, labels, numbers)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.groups()
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def exported_metrics() -> set[str]:
    """Sample names exposed by the collectors and metrics declared in our exporter modules."""
    names: set[str] = set()
    for path in EXPORTERS:
        for kind, name in _FAMILY.findall(path.read_text()):
            if kind.startswith("Counter"):
                base = name.removesuffix("_total")
                names |= {f"{base}_total", f"{base}_created"}
            elif kind.startswith("Histogram"):
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
            elif kind.startswith("Summary"):
                names |= {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
            elif kind.startswith("Info"):
                names.add(f"{name}_info")
            else:
                names.add(name)
    return names


def promtool() -> str:
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if found is None:
        pytest.fail("promtool not found: run scripts/bootstrap.sh (Debian package 'prometheus')")
    return found


def run_promtool(*args: str) -> str:
    done = subprocess.run(
        [promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    output = f"$ promtool {' '.join(args)}\n{done.stdout}{done.stderr}"
    assert done.returncode == 0, output
    return output


def load_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every Prometheus query: panel targets, variables, annotations."""
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['title']!r} {target.get('refId')}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((?:(.*),\s*)?\w+\)", text.strip())
            assert inner is not None, f"variable {variable['name']}: unexpected query {text!r}"
            if inner.group(1):
                queries.append((f"variable {variable['name']}", inner.group(1)))
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            queries.append((f"annotation {annotation['name']!r}", annotation["expr"]))
    return queries


def test_metric_names_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, shard) (rate(a_bucket{shard=~"$shard"}'
        '[$__rate_interval]))) > 1e3 or on (shard) label_replace(b offset 5m, "x", "y", "", "")'
        " unless ignoring (role) c[5m:30s] * bool inf"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c"}


def test_exported_metrics_found_in_code() -> None:
    exported = exported_metrics()
    assert {"up", "wal_events_total", "exdr_api_command_ack_seconds_bucket"} <= exported
    assert PENDING_METRICS <= DOCUMENTED_METRICS
    missing = DOCUMENTED_METRICS - exported - PENDING_METRICS
    assert not missing, f"documented metrics neither exported nor pending: {sorted(missing)}"


def test_promtool_check_rules() -> None:
    output = run_promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert "SUCCESS" in output, output


def test_promtool_rule_unit_tests() -> None:
    output = run_promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))
    assert "SUCCESS" in output, output


def test_every_rule_is_tested_firing_and_quiet() -> None:
    rules = {rule["alert"] for rule in load_rules()}
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert rules - fires == set(), f"rules never shown to fire: {sorted(rules - fires)}"
    assert rules - quiet == set(), f"rules never shown to stay quiet: {sorted(rules - quiet)}"
    assert {
        "MatchingEnginePrimaryDown", "StandbyLagHigh", "WALSizeHigh", "FailoverOccurred",
        "WALReplicationLag", "ZooKeeperDisconnected", "SyncReplicationDegraded",
        "ReplicationCorruptRecords", "ReplicationNoMajority",
    } <= rules


def test_rules_have_severity_and_guidance() -> None:
    for rule in load_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"]) > 80, rule["alert"]


def test_rules_query_only_exported_metrics() -> None:
    known = exported_metrics() | PENDING_METRICS
    for rule in load_rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        assert names <= DOCUMENTED_METRICS | PROMETHEUS_BUILTINS, (rule["alert"], names)
        unknown = names - known - PROMETHEUS_BUILTINS
        assert not unknown, f"{rule['alert']} queries metrics nobody exports: {sorted(unknown)}"


def test_dashboard_structure() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert set(REQUIRED_PANELS) <= set(titles), set(REQUIRED_PANELS) - set(titles)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    datasource = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for panel in dashboard["panels"]:
        where = panel["title"]
        assert panel["datasource"] == datasource, where
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}, where
        assert panel["targets"], f"{where}: no targets"
        for target in panel["targets"]:
            assert target["datasource"] == datasource, where
            assert target["expr"].strip(), where
    table = next(p for p in dashboard["panels"] if p["title"] == "Failover History")
    assert table["type"] == "table"
    assert table["targets"][0]["format"] == "table"


def test_dashboard_queries_only_documented_metrics() -> None:
    known = exported_metrics() | PENDING_METRICS
    used: set[str] = set()
    for where, expr in dashboard_queries(load_dashboard()):
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        assert names <= DOCUMENTED_METRICS | PROMETHEUS_BUILTINS, (where, names)
        assert not names - known - PROMETHEUS_BUILTINS, (where, names - known)
        used |= names
    for required in ("failover_info", "failover_rto_seconds", "exdr_api_command_ack_seconds_bucket",
                     "replication_degraded", "replication_acks_waiting", "wal_events_total",
                     "matching_engine_standby_lag_seconds", "standby_lag_records"):
        assert required in used, f"the dashboard does not show {required}"


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses every dashboard query, Grafana's variables filled in."""
    rules = []
    for index, (_, expr) in enumerate(dashboard_queries(load_dashboard())):
        for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
            expr = expr.replace(variable, GRAFANA_VARIABLES[variable])
        assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
        rules.append({"record": f"dashboard_query_{index}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool("check", "rules", str(path))
