"""A node's read confirmation: what no failover can take back, by each shard's role here.

The leader knows from its sync gate which seq a majority of the replicas holds, and a read
waits there for the state it shows (infra/api/reads.py); a follower whose rejoin check is done
holds only the leader's records, each on two replicas at least; anything else (promoting,
fenced, deposed and not rejoined yet) may still set its tail aside, so what it shows is
unconfirmed.
"""

from __future__ import annotations

from collections.abc import Mapping

from infra.api.reads import gate_confirms, refuses_unconfirmed
from infra.failover.controller import ShardController


class NodeReads:
    """Implements application.read_confirmation.ReadConfirmation over the node's shard
    controllers (read at each call: roles change under it)."""

    def __init__(self, controllers: Mapping[str, ShardController]) -> None:
        self._controllers = controllers

    async def confirm(self, shard_id: str, seq: int, *, wait: bool = True) -> bool:
        controller = self._controllers.get(shard_id)
        if controller is None:
            return False
        known = controller.confirmed_seq()
        if known is not None and seq <= known:
            return True
        if not wait or not controller.role.leads:
            return False  # only a leader's followers confirm anything more
        # deposed meanwhile: the gate's fail_all answers the wait at once
        return await gate_confirms(controller.gate, seq)

    def refuses_unconfirmed(self, shard_id: str) -> bool:
        controller = self._controllers.get(shard_id)
        return controller is None or refuses_unconfirmed(controller.gate)
