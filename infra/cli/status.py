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


def current_leaders(settings: Settings) -> dict[str, dict[str, Any]]:
    """shard -> the leader node's data in ZooKeeper ({} when unreachable or none)."""
    import json

    from kazoo.client import KazooClient
    from kazoo.exceptions import NoNodeError

    from infra.coordination.zookeeper import shard_path

    leaders: dict[str, dict[str, Any]] = {}
    zk = KazooClient(hosts=settings.zk_hosts, timeout=3.0)
    try:
        zk.start(timeout=3.0)
    except Exception:
        return leaders
    try:
        for shard in settings.shards():
            try:
                data, _ = zk.get(shard_path(settings.zk_root, shard, "leader"))
            except NoNodeError:
                continue
            leaders[shard] = json.loads(data)
    finally:
        zk.stop()
        zk.close()
    return leaders


def collect_status(settings: Settings) -> list[dict[str, Any]]:
    """Per shard and region: role, state, epoch, seq, lag in records and seconds."""
    leaders = current_leaders(settings)
    heads: dict[str, dict[str, tuple[int, int, int]] | None] = {}
    for region in settings.regions:
        try:
            heads[region.name] = _heads(region.pg_dsn)
        except psycopg.Error:
            heads[region.name] = None
    rows: list[dict[str, Any]] = []
    now_us = time.time_ns() // 1000
    for shard in settings.shards():
        leader_name = leaders.get(shard, {}).get("region")
        leader_heads = (heads.get(leader_name) if leader_name else None) or {}
        top_seq, _, _ = leader_heads.get(shard, (0, 0, 0))
        for region in settings.regions:
            region_heads = heads[region.name]
            role = "leader" if region.name == leader_name else "standby"
            if leader_name is None:
                role = "no leader"
            if region_heads is None:
                rows.append(
                    {
                        "shard": shard,
                        "region": region.name,
                        "role": role,
                        "state": "unreachable",
                        "epoch": None,
                        "seq": None,
                        "lag_records": None,
                        "lag_seconds": None,
                    }
                )
                continue
            seq, epoch, at_us = region_heads.get(shard, (0, 0, 0))
            lag = max(0, top_seq - seq) if role == "standby" else 0
            lag_seconds = 0.0
            if lag:
                oldest = at_us or now_us
                lag_seconds = round(max(0, now_us - oldest) / 1e6, 3)
            rows.append(
                {
                    "shard": shard,
                    "region": region.name,
                    "role": role,
                    "state": "streaming" if role == "standby" else "running",
                    "epoch": epoch,
                    "seq": seq,
                    "lag_records": lag,
                    "lag_seconds": lag_seconds,
                }
            )
    return rows


def render_status(rows: list[dict[str, Any]]) -> str:
    headers = ["shard", "region", "role", "state", "epoch", "seq", "lag_records", "lag_seconds"]
    table = [[("-" if r[h] is None else str(r[h])) for h in headers] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [
        line,
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        line,
    ]
    for row in table:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    out.append(line)
    return "\n".join(out)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    rows = collect_status(settings)
    if args.json:
        print(json.dumps({"shards": rows}, default=str))
    else:
        print(render_status(rows))
    return 0 if all(r["state"] != "unreachable" for r in rows) else 1


def register(sub: Commands) -> None:
    status = sub.add_parser("status", help="one row per shard and region: role, epoch, seq, lag")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)
