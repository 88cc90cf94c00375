"""The read-confirmation port: whether the state a read shows can still be taken back.

A leader commits locally first and acknowledges once a majority of the shard's replicas holds
the record. Its hot state therefore runs ahead of what survives the loss of its region: a
maker could see a fill whose taker was refused, and lose it in the failover. A read captures
the seq of the state it shows (on the writer thread) and asks this port whether that seq is
confirmed (Raft's ReadIndex); the facade then answers, refuses, or labels the answer as
unconfirmed (DESIGN.md invariant 11).
"""

from __future__ import annotations

from typing import Protocol


class ReadConfirmation(Protocol):
    """Answers per shard; called on every read, so a seq confirmed already must be answered
    without a wait."""

    async def confirm(self, shard_id: str, seq: int, *, wait: bool = True) -> bool:
        """True once `seq` of the shard is confirmed (no failover can take it back); False if
        it is not within the shard's own bound (its sync timeout), at once without `wait`, and
        at once when waiting cannot help (async replication, a replica that neither leads nor
        has finished its rejoin check)."""
        ...

    def refuses_unconfirmed(self, shard_id: str) -> bool:
        """True: show nothing a majority does not hold (sync mode, strict policy); False:
        answer with the data, labelled unconfirmed (degrade policy, async mode)."""
        ...


class LocalReads:
    """One copy of everything (a facade without replication): what is committed is all there
    is, so every read is confirmed."""

    async def confirm(self, shard_id: str, seq: int, *, wait: bool = True) -> bool:
        return True

    def refuses_unconfirmed(self, shard_id: str) -> bool:
        return False
