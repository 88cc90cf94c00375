"""The lease against the real ZooKeeper: sized from the session the server negotiated."""

from __future__ import annotations

import time
import uuid

import pytest

from infra.coordination.zookeeper import Coordinator
from infra.settings import Settings

pytestmark = pytest.mark.integration

SHARD = "shard-1"


def test_a_clamped_session_gives_a_lease_within_the_negotiated_session(
    settings: Settings,
) -> None:
    # the local server clamps sessions to [400 ms, 4 s] (tickTime=200): ask for 60 s
    coord = Coordinator(
        settings.zk_hosts,
        "lease-a",
        "http://lease-a",
        root=f"/exdr-test/lease-{uuid.uuid4().hex}",
        session_timeout_s=60.0,
    )
    coord.start([SHARD], timeout=15.0)
    try:
        negotiated_s = 4.0
        assert negotiated_s / 2 < coord.lease_s  # as long as the bound allows
        assert coord.session_timeout_s == negotiated_s
        assert coord.lease_s <= negotiated_s - (coord.sync_margin_s + coord.clock_margin_s)
        coord.take_leadership(SHARD, applied_seq=0)
        assert coord.is_leader(SHARD)
        # the renewer keeps a lease of that size alive (sync, then read)
        time.sleep(coord.lease_s * 1.5)
        assert coord.is_leader(SHARD)
        lease_until = coord._lease_until[SHARD]
        assert lease_until <= time.monotonic() + coord.lease_s
        coord.resign(SHARD)
        assert not coord.is_leader(SHARD)
    finally:
        coord.zk.delete(coord.root, recursive=True)
        coord.stop()
