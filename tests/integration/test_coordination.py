"""The ZooKeeper coordinator against a real server: a resignation removes only our own node."""

from __future__ import annotations

import uuid

import pytest

from infra.coordination.zookeeper import Coordinator
from infra.settings import Settings

pytestmark = pytest.mark.integration

SHARD = "shard-1"


def test_resigning_never_deletes_a_successors_leader_node() -> None:
    settings = Settings.from_env()
    root = f"/exdr-test/resign-{uuid.uuid4().hex}"
    old, new = (
        Coordinator(settings.zk_hosts, region, f"http://{region}", root=root)
        for region in ("primary", "standby")
    )
    old.start([SHARD])
    new.start([SHARD])
    try:
        old.take_leadership(SHARD, applied_seq=10)
        old.resign(SHARD)  # our own node: gone
        assert new.refresh_leader(SHARD) is None
        new.take_leadership(SHARD, applied_seq=10, min_epoch=1)
        old.resign(SHARD)  # late (a failed promotion giving back): not ours any more
        leader = new.refresh_leader(SHARD)
        assert leader is not None and leader.region == "standby"
        assert new.is_leader(SHARD)
        assert new.epochs(SHARD) == [(1, 11), (2, 11)]
    finally:
        old.stop()
        new.stop()
