"""docs/runbook.md, executed: every `sh` block of every procedure, as written, on real regions.

One story runs the procedures in order on two regions: look, planned switchover, an unplanned
failover (the test kills the leader), rejoin of the old primary, replay from scratch, a
corrupted record in one region's store, rebuilding that region, and a stuck standby. The test
plays the incidents; the runbook's commands do the operator's part; the test checks the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from infra.drills.cluster import ROOT, SHARD, Cluster, place_orders, wait_for

pytestmark = pytest.mark.drill

RUNBOOK = ROOT / "docs" / "runbook.md"
PROCEDURES = (
    "Before any procedure",
    "Planned switchover",
    "Unplanned failover",
    "Rejoin of the old primary",
    "Replay from scratch",
    "A corrupted WAL record",
    "Rebuilding a lost region",
    "A stuck standby",
)


def sh_blocks(markdown: str) -> dict[str, list[str]]:
    """Section title -> its ```sh blocks, in order."""
    sections: dict[str, list[str]] = {}
    title = ""
    for part in re.split(r"^## (.+)$", markdown, flags=re.M)[1:]:
        if not title:
            title = part.strip()
            continue
        sections[title] = re.findall(r"^```sh\n(.*?)^```", part, flags=re.M | re.S)
        title = ""
    return sections


def test_every_procedure_has_commands() -> None:
    blocks = sh_blocks(RUNBOOK.read_text())
    for name in PROCEDURES:
        assert blocks.get(name), f"runbook section {name!r} has no sh block"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, env={"EXDR_SYNC_POLICY": "degrade", "EXDR_ZK_SESSION_MS": "1000"})
    c.prepare()
    c.start("primary")
    c.start("standby")
    c.create_keys()
    try:
        yield c
    finally:
        for pid_file in tmp_path.glob("*.pid"):  # nodes the runbook's commands started
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        c.close()


class Operator:
    """Runs the runbook's blocks with the variables an operator sets."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.blocks = sh_blocks(RUNBOOK.read_text())
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **cluster.base_env(),
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
            "SHARD": SHARD,
            "EXDR_OPERATOR_KEY": cluster.operator_key,
            "LOG_DIR": str(cluster.workdir),
            "RUN_DIR": str(cluster.workdir),
        }

    def region(self, name: str, prefix: str = "REGION") -> dict[str, str]:
        dsn = self.cluster.dsns[name]
        url = urlsplit(dsn)
        return {
            prefix: name,
            f"{prefix}_URL": self.cluster.url(name),
            f"{prefix}_DSN": dsn,
            f"{prefix}_DB": url.path.lstrip("/"),
            "ADMIN_DSN": url._replace(path="/postgres").geturl(),
        }

    def run(self, procedure: str, **variables: str) -> str:
        output = []
        for block in self.blocks[procedure]:
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block],
                env={**self.env, **variables},
                cwd=self.cluster.workdir,
                capture_output=True,
                text=True,
                timeout=240,
            )
            output.append(done.stdout + done.stderr)
            assert done.returncode == 0, (
                f"runbook {procedure!r}: block failed ({done.returncode}):\n{block}\n"
                f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            )
        text = "\n".join(output)
        print(f"\n=== {procedure}\n{text[-1500:]}")
        return text


def leader_of(cluster: Cluster) -> list[str]:
    return [r for r in ("primary", "standby") if _shard(cluster, r).get("leader")]


def _shard(cluster: Cluster, region: str) -> dict[str, object]:
    try:
        return cluster.shards(region)[SHARD]
    except Exception:
        return {}


def same_state(cluster: Cluster) -> bool:
    a = cluster.shards("primary", state_hash=True)[SHARD]
    b = cluster.shards("standby", state_hash=True)[SHARD]
    return bool(a["seq"] == b["seq"] and a["state_hash"] == b["state_hash"])


def orders(cluster: Cluster, region: str, prefix: str, n: int = 40) -> None:
    result = asyncio.run(
        place_orders(
            cluster.url(region), cluster.key, [f"{prefix}-{i}" for i in range(n)],
            funding_key=cluster.funding_key,
        )
    )
    assert set(result["statuses"]) == {201}, result["statuses"]


# about a minute on two cores: `make drills` runs it (marked long); the check above stays in
# `make test`
@pytest.mark.long
def test_runbook_procedures_run_as_written(cluster: Cluster) -> None:
    op = Operator(cluster)
    orders(cluster, "primary", "a")

    out = op.run("Before any procedure", **op.region("primary"))
    assert "leader" in out and "up{" in out

    # planned: primary -> standby
    out = op.run("Planned switchover", TARGET="standby", **op.region("standby"))
    assert leader_of(cluster) == ["standby"]
    orders(cluster, "standby", "b")

    # the incident: the leader (standby region) dies; the runbook checks the failover
    cluster.stop("standby", signal.SIGKILL)
    out = op.run("Unplanned failover", **op.region("primary", "LEADER"))
    assert "failover_total" in out
    assert leader_of(cluster) == ["primary"]
    orders(cluster, "primary", "c")

    # the old primary (standby region) comes back as a standby
    op.run("Rejoin of the old primary", **op.region("standby"))
    wait_for(lambda: same_state(cluster), 30, "the rejoined region to hold the same state")

    out = op.run("Replay from scratch", **op.region("primary", "LEADER"))
    assert '"matches_live": true' in out

    # the incident: one record in the standby region's store is altered on disk
    seq = 7
    with psycopg.connect(cluster.dsns["standby"], autocommit=True) as conn:
        conn.execute(
            "UPDATE wal_records SET checksum = repeat('0', 64) WHERE shard_id = %s AND "
            "seq = %s",
            (SHARD, seq),
        )
    variables = {**op.region("standby"), **op.region("primary", "LEADER"), "SEQ": str(seq)}
    variables.update(op.region("standby"))  # ADMIN_DSN of the region acted on
    out = op.run("A corrupted WAL record", **variables)
    assert "DAMAGED" in out and "intact" in out

    # rebuild the damaged region from nothing
    out = op.run("Rebuilding a lost region", **variables)
    wait_for(lambda: same_state(cluster), 60, "the rebuilt region to hold the same state")
    with psycopg.connect(cluster.dsns["standby"]) as conn:
        good = conn.execute(
            "SELECT checksum <> repeat('0', 64) FROM wal_records WHERE shard_id = %s "
            "AND seq = %s",
            (SHARD, seq),
        ).fetchone()
    assert good == (True,)

    # the incident: the standby stops applying after some record (a stuck replicator)
    pid = int((cluster.workdir / "standby.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not _alive(pid), 30, "the standby to stop")
    head = int(cluster.shards("primary")[SHARD]["seq"])
    stuck = cluster.start("standby", EXDR_FAULT_STALL_AFTER_SEQ=str(head + 5))
    (cluster.workdir / "standby.pid").write_text(str(stuck.pid))
    cluster.procs.pop("standby")  # the runbook's commands own it from here
    threading.Thread(target=stuck.wait, daemon=True).start()  # reaped when they stop it
    orders(cluster, "primary", "d")
    wait_for(
        lambda: cluster.metric("standby", "standby_lag_records") > 10, 30, "the standby to lag"
    )
    out = op.run("A stuck standby", **op.region("standby"))
    assert "THREAD " in out, "the thread dump did not reach the log"
    wait_for(lambda: same_state(cluster), 30, "the restarted standby to catch up")
    assert leader_of(cluster) == ["primary"]


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
        os.kill(pid, 0)
    except (ChildProcessError, ProcessLookupError):
        return False
    except OSError:
        return True
    return True
