"""Arrays packed in PostgreSQL's binary form read back exactly as the server parses them."""

from __future__ import annotations

import uuid

import psycopg

from infra.settings import Settings
from infra.wal.pg_arrays import ByteaArray, Int8Array, TextArray, UuidArray


def test_the_server_reads_back_what_was_packed() -> None:
    ints = [0, 1, -1, 2**63 - 1, -(2**63), 1_732_000_000_000_000]
    texts = ["PlaceOrder", None, "", "ünïcödé ✓", "x" * 5000]
    blobs = [b"", b"\x00\xff" * 3000, bytes(range(256))]
    ids = [uuid.uuid4() for _ in range(3)]
    as_text = [str(i) for i in ids]  # an originator id may be text
    with psycopg.connect(Settings.from_env().pg_dsn.rsplit("/", 1)[0] + "/postgres") as conn:
        row = conn.execute(
            "SELECT %s::int8[], %s::text[], %s::bytea[], %s::uuid[], "
            "%s::int8[], %s::text[], %s::bytea[], %s::uuid[], cardinality(%s::int8[]), "
            "%s::uuid[]",
            (
                Int8Array(ints),
                TextArray(texts),
                ByteaArray(blobs),
                UuidArray(ids),
                Int8Array([]),
                TextArray([]),
                ByteaArray([]),
                UuidArray([]),
                Int8Array([7]),
                UuidArray(as_text),
            ),
            binary=True,
        ).fetchone()
    assert row is not None
    assert list(row[0]) == ints
    assert list(row[1]) == texts
    assert [bytes(b) for b in row[2]] == blobs
    assert list(row[3]) == ids
    assert [list(a) for a in row[4:8]] == [[], [], [], []]
    assert row[8] == 1
    assert list(row[9]) == ids
