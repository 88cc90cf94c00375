"""`exchange-dr status`: the 3 a.m. table, read straight from each region's store."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import psycopg

from infra.cli.common import Commands
from infra.settings import Settings


def _heads(dsn: str) -> dict[str, tuple[int, int, int]]:
    """shard -> (seq, epoch, recorded_at_us of the newest record)."""
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        rows = conn.execute(
            "SELECT h.shard_id, h.seq, h.epoch, coalesce(r.recorded_at_us, 0) FROM wal_heads h "
            "LEFT JOIN wal_records r ON r.shard_id = h.shard_id AND r.seq = h.seq"
        ).fetchall()
    return {row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in rows}


def read_coordination(settings: Settings) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]]:
    """From ZooKeeper: shard -> the leader node's data, and shard -> the regions whose member
    node is live (their node runs). Both empty when ZooKeeper is unreachable."""
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoNodeError

    from infra.coordination.zookeeper import shard_path

    leaders: dict[str, dict[str, Any]] = {}
    members: dict[str, set[str]] = {}
    zk = KazooClient(hosts=settings.zk_hosts, timeout=3.0)
    try:
        zk.start(timeout=3.0)
    except Exception:
        return leaders, members
    try:
        for shard in settings.shards():
            try:
                data, _ = zk.get(shard_path(settings.zk_root, shard, "leader"))
                leaders[shard] = json.loads(data)
            except NoNodeError:
                pass
            try:
                members[shard] = set(
                    zk.get_children(shard_path(settings.zk_root, shard, "members"))
                )
            except NoNodeError:
                members[shard] = set()
    finally:
        zk.stop()
        zk.close()
    return leaders, members


def current_leaders(settings: Settings) -> dict[str, dict[str, Any]]:
    """shard -> the leader node's data in ZooKeeper ({} when unreachable or none)."""
    return read_coordination(settings)[0]


def collect_status(settings: Settings) -> list[dict[str, Any]]:
    """Per shard and replica: role, state, epoch, seq, lag, and whether it counts toward the
    quorum now."""
    leaders, members = read_coordination(settings)
    heads: dict[str, dict[str, tuple[int, int, int]] | None] = {}
    for region in settings.regions:
        try:
            heads[region.name] = _heads(region.pg_dsn)
        except psycopg.Error:
            heads[region.name] = None
    return status_rows(settings, leaders, members, heads, time.time_ns() // 1000)


def status_rows(
    settings: Settings,
    leaders: dict[str, dict[str, Any]],
    members: dict[str, set[str]],
    heads: dict[str, dict[str, tuple[int, int, int]] | None],
    now_us: int,
) -> list[dict[str, Any]]:
    """The table's rows from what was read. A replica counts toward the quorum when its node is
    live in ZooKeeper (the leader: holds the leader node), its store answers, and it is not
    further behind than a command waits for its confirmations (EXDR_SYNC_TIMEOUT_MS)."""
    rows: list[dict[str, Any]] = []
    for shard in settings.shards():
        leader_name = leaders.get(shard, {}).get("region")
        leader_heads = (heads.get(leader_name) if leader_name else None) or {}
        top_seq, _, _ = leader_heads.get(shard, (0, 0, 0))
        live = members.get(shard, set())
        for region in settings.regions:
            region_heads = heads.get(region.name)
            if region.name == leader_name:
                role = "leader"
            elif leader_name is None:
                role = "no leader"
            else:
                role = "witness" if not region.promotable else "standby"
            row: dict[str, Any] = {
                "shard": shard,
                "region": region.name,
                "kind": region.kind.value,
                "role": role,
                "state": "unreachable",
                "epoch": None,
                "seq": None,
                "lag_records": None,
                "lag_seconds": None,
                "quorum": False,
            }
            if region_heads is None:
                rows.append(row)
                continue
            seq, epoch, at_us = region_heads.get(shard, (0, 0, 0))
            following = role in ("standby", "witness")
            lag = max(0, top_seq - seq) if following else 0
            lag_seconds = 0.0
            if lag:
                oldest = at_us or now_us
                lag_seconds = round(max(0, now_us - oldest) / 1e6, 3)
            node_live = region.name == leader_name or region.name in live
            row.update(
                state=("streaming" if following else "running") if node_live else "stopped",
                epoch=epoch,
                seq=seq,
                lag_records=lag,
                lag_seconds=lag_seconds,
                quorum=node_live
                and leader_name is not None
                and lag_seconds * 1000 <= settings.sync_timeout_ms,
            )
            rows.append(row)
    return rows


HEADERS = [
    "shard",
    "region",
    "kind",
    "role",
    "state",
    "epoch",
    "seq",
    "lag_records",
    "lag_seconds",
    "quorum",
]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def render_status(rows: list[dict[str, Any]]) -> str:
    table = [[_cell(r.get(h)) for h in HEADERS] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(HEADERS)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [
        line,
        "| " + " | ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)) + " |",
        line,
    ]
    for row in table:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    out.append(line)
    out.extend(quorum_lines(rows))
    return "\n".join(out)


def quorum_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per shard: how many replicas count toward its quorum, against how many it needs."""
    from application.replication.quorum import majority

    lines = []
    for shard in dict.fromkeys(r["shard"] for r in rows):
        mine = [r for r in rows if r["shard"] == shard]
        counting = [r["region"] for r in mine if r["quorum"]]
        need = majority(len(mine))
        if not any(r["role"] == "leader" for r in mine):
            verdict = "NO LEADER: nothing acknowledged"
        elif len(counting) >= need:
            verdict = "acknowledging"
        else:
            verdict = "NO MAJORITY: nothing acknowledged"
        lines.append(
            f"{shard}: quorum {len(counting)}/{len(mine)} (needs {need}: "
            f"{', '.join(counting) or 'none'}) {verdict}"
        )
    return lines


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    rows = collect_status(settings)
    if args.json:
        print(json.dumps({"shards": rows}, default=str))
    else:
        print(render_status(rows))
    return 0 if all(r["state"] != "unreachable" for r in rows) else 1


def register(sub: Commands) -> None:
    status = sub.add_parser(
        "status", help="one row per replica of every shard: role, epoch, seq, lag, quorum"
    )
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)
