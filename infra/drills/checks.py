"""What a drill checks afterwards: the clients' ledger, cancels, one leader, replays."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import psycopg

from domain.account import Account
from domain.order import Order
from infra.drills.clients import Ledger, Trader
from infra.drills.cluster import SHARD, Cluster, wait_for


def check_ledger(cluster: Cluster, region: str, ledger: Ledger) -> dict[str, int]:
    """Compare the clients' ledger with what the (new) primary holds."""

    def order_id(cid: str) -> str:
        owner = ledger.owners.get(cid, "traders")
        return str(Order.create_id(Account.create_id(SHARD, owner), cid))

    expected = {order_id(cid) for cid in ledger.sent}
    with psycopg.connect(cluster.dsns[region]) as conn:
        rows = conn.execute(
            "SELECT command_key, count(*) FROM wal_records WHERE shard_id = %s AND "
            "command_type = 'PlaceOrder' GROUP BY command_key",
            (SHARD,),
        ).fetchall()
    present = {row[0]: int(row[1]) for row in rows}
    acked = {order_id(cid) for cid in ledger.acked}
    return {
        "lost": sum(1 for key in acked if key not in present),
        "duplicated": sum(count - 1 for count in present.values() if count > 1),
        "phantom": sum(1 for key in present if key not in expected),
    }


def check_cancels(url: str, traders: list[Trader], ledger: Ledger) -> int:
    """Acknowledged cancels whose order the (new) primary does not show as cancelled."""
    keys = {t.owner: t.key for t in traders}

    async def status(http: httpx.AsyncClient, order_id: str, owner: str) -> str:
        r = await http.get(
            f"{url}/v1/orders/{order_id}", headers={"Authorization": f"Bearer {keys[owner]}"}
        )
        return str(r.json().get("status")) if r.status_code == 200 else f"http {r.status_code}"

    async def run() -> int:
        async with httpx.AsyncClient(timeout=10) as http:
            limit = asyncio.Semaphore(16)

            async def one(order_id: str) -> bool:
                async with limit:
                    owner = ledger.cancels_sent[order_id]
                    return await status(http, order_id, owner) != "CANCELLED"

            results = await asyncio.gather(*(one(o) for o in ledger.cancels_acked))
        return sum(results)

    return asyncio.run(run())


def settle(cluster: Cluster, leader: str, follower: str, timeout: float = 30) -> int:
    """Wait until the follower holds every record of the leader; returns that seq."""

    def same() -> int | None:
        head = cluster.shards(leader)[SHARD]["seq"]
        return head if cluster.shards(follower)[SHARD]["seq"] == head else None

    return int(wait_for(same, timeout, f"{follower} to catch up with {leader}", interval=0.1))


def one_leader(cluster: Cluster) -> list[str]:
    return [r for r in ("primary", "standby") if cluster.shards(r)[SHARD]["leader"]]


def full_regions(cluster: Cluster) -> list[str]:
    """The regions that hold the state (not a witness, which keeps the WAL only)."""
    return [name for name, kind in cluster.sites if kind == "full"]


def wal_heads(cluster: Cluster, regions: list[str]) -> dict[str, dict[str, Any]]:
    """Each region's WAL for the shard, as stored: the head seq, the head record's checksum,
    and whether the chain is whole (seqs without a gap from the first stored one, each record
    naming its predecessor's checksum). Equal heads and whole chains: the same WAL."""
    out: dict[str, dict[str, Any]] = {}
    for region in regions:
        with psycopg.connect(cluster.dsns[region]) as conn:
            head = conn.execute(
                "SELECT h.seq, r.checksum FROM wal_heads h LEFT JOIN wal_records r "
                "ON r.shard_id = h.shard_id AND r.seq = h.seq WHERE h.shard_id = %s",
                (SHARD,),
            ).fetchone()
            first, last, count, broken = conn.execute(
                "SELECT min(seq), max(seq), count(*), count(*) FILTER (WHERE prev IS NOT NULL "
                "AND prev_checksum IS DISTINCT FROM prev) FROM (SELECT seq, prev_checksum, "
                "lag(checksum) OVER (ORDER BY seq) AS prev FROM wal_records "
                "WHERE shard_id = %s) chain",
                (SHARD,),
            ).fetchone() or (None, None, 0, 0)
        gapless = count == 0 or (last - first + 1 == count)
        out[region] = {
            "seq": int(head[0]) if head else 0,
            "checksum": head[1] if head else None,
            "records": int(count),
            "chain_whole": bool(gapless and not broken),
        }
    return out


def replay_everywhere(cluster: Cluster) -> dict[str, Any]:
    """Replay from scratch in every full region and rebuild their projections from the WAL
    (a witness holds no state to replay into: compare its WAL with `wal_heads`)."""
    from infra.bootstrap import make_projector, make_shard_app
    from infra.settings import Settings
    from projections.read_models.check import projections_match_engine

    out: dict[str, Any] = {"replay": {}, "projection_problems": []}
    for region in full_regions(cluster):
        dsn = cluster.dsns[region]
        settings = Settings.from_env({**cluster.base_env(), "EXDR_PG_DSN": dsn})
        app = make_shard_app(settings, SHARD, dsn=dsn)
        try:
            report = app.recover(from_scratch=True)
            out["replay"][region] = {
                "seq": report.seq,
                "events": report.events,
                "seconds": round(report.seconds, 3),
                "state_hash": report.state_hash,
            }
            projector = make_projector(settings, dsn=dsn)
            projector.rebuild([SHARD], everything=False)
            with projector.sessions() as session:
                problems = projections_match_engine(session, app.engine)
            bind = projector.sessions.kw.get("bind")
            if bind is not None:
                bind.dispose()
            out["projection_problems"] += [f"{region}: {p}" for p in problems]
        finally:
            app.close()
    return out


def read_models_match(cluster: Cluster, region: str, timeout: float = 20) -> dict[str, Any]:
    """The live read models of `region` (projected by its node up to the confirmed point)
    against a projection from scratch of its WAL, computed in memory: every row of orders,
    trades, positions and balances. Waits first until the live projection reached the
    confirmed head (every record of the store confirmed and projected)."""
    from infra.bootstrap import all_instruments, make_projector
    from infra.settings import Settings
    from projections.read_models.check import project_in_memory, views_match_rows
    from projections.read_models.confirmed import read_confirmed

    dsn = cluster.dsns[region]
    settings = Settings.from_env({**cluster.base_env(), "EXDR_PG_DSN": dsn})
    projector = make_projector(settings, dsn=dsn)
    started = time.monotonic()
    out: dict[str, Any] = {"read_models_match": False}
    try:

        def caught_up() -> tuple[int, int, int] | None:
            head = projector.store.head(SHARD).seq
            point = read_confirmed(projector.sessions, SHARD)
            tracked = projector.tracked(SHARD)
            confirmed = 0 if point is None else point.seq
            out["read_models_position"] = {"head": head, "confirmed": confirmed, "tracked": tracked}
            return (head, confirmed, tracked) if head == confirmed == tracked else None

        try:
            wait_for(caught_up, timeout, f"{region}'s read models to reach the confirmed head")
        except AssertionError as exc:
            out["read_models_problems"] = [f"{exc} ({out.get('read_models_position')})"]
            return out
        waited = time.monotonic() - started
        tracked = projector.tracked(SHARD)
        instruments = {i.symbol: i for i in all_instruments(settings)}
        expected = project_in_memory(projector.store, SHARD, tracked, instruments)
        with projector.sessions() as session:
            problems, counts = views_match_rows(session, SHARD, expected)
        out.update(
            {
                "read_models_match": not problems,
                "read_models": {
                    "region": region,
                    "seq": tracked,
                    **counts,
                    "waited_s": round(waited, 3),
                    "checked_s": round(time.monotonic() - started - waited, 3),
                },
                "read_models_problems": problems[:20],
            }
        )
        return out
    finally:
        bind = projector.sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()
        datastore = getattr(projector.store, "datastore", None)
        if datastore is not None:
            datastore.close()
