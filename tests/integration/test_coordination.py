"""The ZooKeeper coordinator against a real server: a resignation removes only our own node."""

from __future__ import annotations

import time
import uuid

import pytest
from kazoo.exceptions import NodeExistsError

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


def test_taking_a_led_shard_appends_no_epoch_and_members_are_read_together() -> None:
    """The epoch and the leader node are written in one transaction: a region that finds the
    shard led raises and leaves the history as it was (no epoch burned). Every live member's
    position is read, in one round of reads."""
    settings = Settings.from_env()
    root = f"/exdr-test/take-{uuid.uuid4().hex}"
    coords = [
        Coordinator(settings.zk_hosts, region, f"http://{region}", root=root)
        for region in ("primary", "standby", "witness")
    ]
    for coord in coords:
        coord.start([SHARD])
    first, second, witness = coords
    try:
        assert first.take_leadership(SHARD, applied_seq=0) == 1
        with pytest.raises(NodeExistsError):
            second.take_leadership(SHARD, applied_seq=0, min_epoch=1)
        assert second.epochs(SHARD) == [(1, 1)]
        assert first.is_leader(SHARD) and not second.is_leader(SHARD)
        for n, coord in enumerate(coords):
            kind = "witness" if coord is witness else "full"
            coord.publish_position(SHARD, kind=kind, epoch=1, seq=10 + n)
        members = sorted(first.members(SHARD), key=lambda m: m["region"])
        assert [(m["region"], m["kind"], m["seq"]) for m in members] == [
            ("primary", "full", 10),
            ("standby", "full", 11),
            ("witness", "witness", 12),
        ]
        first.resign(SHARD)
        assert second.take_leadership(SHARD, applied_seq=5, min_epoch=1) == 2
        assert second.epochs(SHARD) == [(1, 1), (2, 6)]
    finally:
        for coord in coords:
            coord.stop()


def test_a_connection_loop_killed_by_an_unhandled_error_is_restarted() -> None:
    """kazoo ends its connection loop for good on an unexpected error (its issue #254: 'xids do
    not match' from a server); the coordinator starts the client again, so the region can lead
    and sees leader changes once more instead of staying without ZooKeeper until restarted."""
    settings = Settings.from_env()
    root = f"/exdr-test/revive-{uuid.uuid4().hex}"
    coord = Coordinator(settings.zk_hosts, "standby", "http://standby", root=root)
    other = Coordinator(settings.zk_hosts, "primary", "http://primary", root=root)
    coord.start([SHARD])
    other.start([SHARD])
    try:
        connection = coord.zk._connection
        read = connection._read_socket
        broken = {"left": 1}

        def read_socket(timeout: float) -> object:
            if broken["left"]:
                broken["left"] -= 1
                raise RuntimeError("xids do not match, expected %r received %r", 28, 27)
            return read(timeout)

        connection._read_socket = read_socket
        other.zk.set(other._path(SHARD), b"poke")  # any traffic: the next read raises
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not connection.connection_stopped.is_set():
            time.sleep(0.02)
        assert connection.connection_stopped.is_set(), "the connection loop did not end"
        while time.monotonic() < deadline and not coord.connected:
            time.sleep(0.05)
        assert coord.connected, "the coordinator stayed without ZooKeeper"
        # the watches work again: a leader taken elsewhere is seen here
        other.take_leadership(SHARD, applied_seq=5)
        while time.monotonic() < deadline and coord.leader(SHARD) is None:
            time.sleep(0.05)
        leader = coord.leader(SHARD)
        assert leader is not None and leader.region == "primary"
    finally:
        coord.stop()
        other.stop()
