"""The confirmed point of a shard: the record up to which a failover can take nothing back.

The node writes it in its region's database (`wal_confirmed`, moved forward only) as its
majority confirmations come in; every projection of that region stops there. Carrying the
record's epoch and checksum lets a projector prove that what it projected is that history: it
must chain from its tracking row's checksum and end exactly at this checksum, and a record of a
deposed leader's fork, linking to the same predecessor, cannot pass both ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from projections.read_models.models import ConfirmedRow


@dataclass(frozen=True, slots=True)
class ConfirmedPoint:
    """The last confirmed record of a shard, as this region's node saw it confirmed."""

    shard: str
    seq: int
    epoch: int
    checksum: str


def read_confirmed(sessions: sessionmaker[Session], shard: str) -> ConfirmedPoint | None:
    """The shard's confirmed point in this database (None: the node has recorded none yet)."""
    with sessions() as session:
        row = session.scalars(select(ConfirmedRow).where(ConfirmedRow.shard == shard)).first()
        if row is None:
            return None
        return ConfirmedPoint(row.shard, int(row.seq), int(row.epoch), row.checksum)


def record_confirmed(sessions: sessionmaker[Session], point: ConfirmedPoint) -> bool:
    """Move the shard's confirmed point forward to `point` (never back); True if it moved."""
    statement = (
        insert(ConfirmedRow)
        .values(shard=point.shard, seq=point.seq, epoch=point.epoch, checksum=point.checksum)
        .on_conflict_do_update(
            index_elements=[ConfirmedRow.shard],
            set_={"seq": point.seq, "epoch": point.epoch, "checksum": point.checksum},
            where=ConfirmedRow.seq < point.seq,
        )
    )
    with sessions.begin() as session:
        result = session.execute(statement)
        return bool(getattr(result, "rowcount", 0))
