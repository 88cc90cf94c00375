"""The history `bench history` generates is what the product itself would have stored: a
replay from scratch by the CLI reaches the generator's own state hash (and agrees with the
recovery from the newest checkpoint), and the read models hold exactly what a rebuild from the
WAL projects, with the tracking row at the head."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import psycopg
import pytest

from infra.bench.history import _generate
from infra.bootstrap import make_projector
from infra.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration

SHARD = "shard-1"
RECORDS = 5000


def _views(dsn: str) -> dict[str, tuple[int, str]]:
    """Each view's row count and a digest of its whole content."""
    found = {}
    with psycopg.connect(dsn) as conn:
        for table in ("rm_orders", "rm_trades", "rm_positions", "rm_balances"):
            row = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "
                f"FROM {table} t"
            ).fetchone()
            assert row is not None
            found[table] = (int(row[0]), str(row[1]))
    return found


def test_generated_history_replays_to_the_generators_state_and_is_projected(
    settings: Settings, dsn: str
) -> None:
    settings = replace(settings, checkpoint_every=1000)  # a few checkpoints in the history
    generation = _generate(settings, SHARD, dsn, RECORDS, 1)
    assert generation["records"] >= RECORDS
    assert generation["projected"] == generation["records"]

    replay = subprocess.run(
        [
            sys.executable,
            "-m",
            "infra.cli.main",
            "replay",
            "--shard",
            SHARD,
            "--from-scratch",
            "--json",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "EXDR_PG_DSN": dsn, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr[-2000:]
    report = json.loads(replay.stdout)
    assert report["seq"] == generation["records"]
    assert report["state_hash"] == generation["state_hash"]
    assert report["matches_live"] is True
    with psycopg.connect(dsn) as conn:
        checkpoints = conn.execute(
            "SELECT count(*) FROM wal_checkpoints WHERE shard_id = %s", (SHARD,)
        ).fetchone()
    assert checkpoints is not None and checkpoints[0] >= 1

    projected = _views(dsn)
    assert projected["rm_orders"][0] > 0 and projected["rm_trades"][0] > 0
    projector = make_projector(settings, dsn=dsn)
    rebuilt = projector.rebuild([SHARD], everything=False)
    assert rebuilt.records == generation["records"]
    assert _views(dsn) == projected
    assert projector.tracked(SHARD) == generation["records"]
