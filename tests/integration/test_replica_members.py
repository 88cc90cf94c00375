"""Replica positions in ZooKeeper: published as ephemeral nodes, gone with the session."""

from __future__ import annotations

import uuid

from infra.coordination.zookeeper import Coordinator
from infra.settings import Settings


def test_members_are_the_live_sessions_positions(settings: Settings) -> None:
    root = f"/exdr-test/members-{uuid.uuid4().hex[:8]}"
    hosts = settings.zk_hosts.split(",")[0]
    a = Coordinator(hosts, "a", "http://127.0.0.1:1", root=root, session_timeout_s=2.0)
    w = Coordinator(hosts, "w", "http://127.0.0.1:2", root=root, session_timeout_s=2.0)
    a.start(["s"])
    w.start(["s"])
    try:
        a.publish_position("s", kind="full", epoch=1, seq=5)
        w.publish_position("s", kind="witness", epoch=1, seq=6)
        a.publish_position("s", kind="full", epoch=1, seq=7)  # refreshed in place
        assert a.members("s") == [
            {"region": "a", "kind": "full", "epoch": 1, "seq": 7},
            {"region": "w", "kind": "witness", "epoch": 1, "seq": 6},
        ]
        w.stop()  # its session closes: its node goes with it
        assert [m["region"] for m in a.members("s")] == ["a"]
    finally:
        a.zk.delete("/exdr-test/" + root.rsplit("/", 1)[1], recursive=True)
        a.stop()
