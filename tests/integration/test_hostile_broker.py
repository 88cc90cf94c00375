"""A hostile broker: whoever can write to the topics tries to make the regions believe things.

Two real regions under a little load (a client placing orders all along), sync replication
with the strict policy, one broker. Each case publishes what an attacker could, then checks
that nothing forged was stored or applied, that no client was acknowledged without a real
confirmation, that the refusal was counted and alerted on, and that the standby's state hash
is the leader's. At the end the leader is killed: the standby is promoted with every
acknowledged command (one failover for the suite, to keep it short).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from application.wal.auth import ReplicationKeys
from application.wal.records import RecordedEvent, WalRecord
from infra.drills.cluster import Cluster, wait_for
from projections.topics import acks_topic_name, wal_topic_name

pytestmark = pytest.mark.integration

SHARD = "shard-1"
KEY = "hostile-broker-suite-replication-key"
KEYS = ReplicationKeys("k1", {"k1": KEY.encode()})
ATTACKER = ReplicationKeys("k1", {"k1": b"what the attacker guesses it is"})


class Load:
    """A client placing a few orders a second on the leader, all along."""

    def __init__(self, url: str, key: str, funding_key: str) -> None:
        self.funding_key = funding_key
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        self.acked: dict[str, int] = {}
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._n = 0
        self._lock = threading.Lock()

    def start(self) -> Load:
        deposit = self.client.post(  # the treasury's funding key credits the traders
            "/v1/deposits",
            json={"amount": "100000000", "symbol": "BTCUSDT", "account": "traders"},
            headers={"Authorization": f"Bearer {self.funding_key}"},
        )
        deposit.raise_for_status()
        return self.resume()

    def resume(self) -> Load:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def order(self) -> int:
        with self._lock:
            self._n += 1
            n = self._n
        cid = f"h-{n}"
        side = "BUY" if n % 2 else "SELL"
        price = 49000 + n % 50 * 10 if side == "BUY" else 51000 + n % 50 * 10
        body = {
            "symbol": "BTCUSDT",
            "side": side,
            "type": "LIMIT",
            "price": str(price),
            "quantity": "0.001",
            "client_order_id": cid,
        }
        try:
            response = self.client.post("/v1/orders", json=body)
        except httpx.HTTPError:
            return -1
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        if response.status_code in (200, 201):
            self.acked[cid] = int(response.json()["seq"])
        return response.status_code

    def _run(self) -> None:
        while not self._stop.is_set():
            self.order()
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp("hostile"),
        env={
            "EXDR_REPLICATION_KEY": KEY,
            "EXDR_REPLICATION_KEY_ID": "k1",
            "EXDR_SYNC_POLICY": "strict",
            "EXDR_SYNC_TIMEOUT_MS": "1000",
        },
    )
    c.prepare()
    try:
        c.start("primary")
        c.start("standby")
        c.create_keys()
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def load(cluster: Cluster) -> Iterator[Load]:
    running = Load(cluster.url("primary"), cluster.key, cluster.funding_key).start()
    try:
        yield running
    finally:
        running.stop()


def publish(cluster: Cluster, topic: str, values: list[bytes]) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{cluster.kafka_port}")
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value, key=SHARD.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def wal_topic(cluster: Cluster) -> str:
    return wal_topic_name(f"t{cluster.tag}", SHARD)


def head(cluster: Cluster, region: str) -> tuple[int, int, str]:
    """(seq, epoch, checksum) of the region's last stored record."""
    with psycopg.connect(cluster.dsns[region]) as conn:
        row = conn.execute(
            "SELECT seq, epoch, checksum FROM wal_records WHERE shard_id = %s "
            "ORDER BY seq DESC LIMIT 1",
            (SHARD,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), str(row[2])


def checksums(cluster: Cluster, region: str, first: int, last: int) -> dict[int, str]:
    with psycopg.connect(cluster.dsns[region]) as conn:
        rows = conn.execute(
            "SELECT seq, checksum FROM wal_records WHERE shard_id = %s AND seq BETWEEN %s AND %s",
            (SHARD, first, last),
        ).fetchall()
    return {int(seq): str(checksum) for seq, checksum in rows}


def forged(
    seq: int,
    epoch: int,
    prev: str,
    *,
    keys: ReplicationKeys | None,
    state: bytes = b'{"amount":{"_type_":"decimal_str","_data_":"1000000000"}}',
    topic: str = "domain.account:Account.Deposited",
) -> dict[str, Any]:
    record = WalRecord.seal(
        shard_id=SHARD,
        epoch=epoch,
        seq=seq,
        command_type="Deposit",
        command_key=None,
        recorded_at_us=time.time_ns() // 1000,
        events=[RecordedEvent(uuid4(), 2, topic, state)],
        prev_checksum=prev,
        sign=None if keys is None else keys.sign_record,
    )
    return record.to_wire()


def rejected(cluster: Cluster, region: str, reason: str, kind: str) -> float:
    text = httpx.get(cluster.url(region) + "/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("replication_rejected_total{") and (
            f'reason="{reason}"' in line and f'kind="{kind}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def alerted(cluster: Cluster, region: str, name: str, reason: str | None = None) -> bool:
    for line in cluster.log(region).read_text().splitlines():
        found = re.search(r"ALERT (\{.*\})", line)
        if found:
            alert = json.loads(found.group(1))
            if alert["alert"] == name and (reason is None or alert.get("reason") == reason):
                return True
    return False


def settle(cluster: Cluster, load: Load) -> None:
    """The standby holds what the leader holds, the same state, and every ack is stored."""
    wait_for(
        lambda: head(cluster, "standby")[0] >= max(load.acked.values(), default=0),
        20,
        "the standby to store every acknowledged record",
    )
    primary_seq = head(cluster, "primary")[0]
    wait_for(lambda: head(cluster, "standby")[0] >= primary_seq, 20, "the standby to catch up")
    first = max(1, primary_seq - 400)
    assert checksums(cluster, "standby", first, primary_seq) == checksums(
        cluster, "primary", first, primary_seq
    )
    assert cluster.metric("standby", "standby_lag_records") < 50


def same_state(cluster: Cluster) -> None:
    """Hot state hashes equal at one seq (the load paused meanwhile by the caller)."""

    def equal() -> bool:
        primary = cluster.shards("primary", state_hash=True)[SHARD]
        standby = cluster.shards("standby", state_hash=True)[SHARD]
        return bool(
            primary["seq"] == standby["seq"] and primary["state_hash"] == standby["state_hash"]
        )

    wait_for(equal, 20, "the same state hash in both regions", interval=0.3)


def test_forged_confirmation_with_a_huge_seq_acknowledges_nothing(
    cluster: Cluster, load: Load
) -> None:
    load.stop()
    standby = cluster.procs["standby"]
    standby.send_signal(signal.SIGSTOP)
    try:
        time.sleep(0.5)
        assert load.order() == 503  # strict: nothing acknowledged without the standby
        seq, epoch, checksum = head(cluster, "primary")
        acks = [
            # the message of the report: unsigned, no checksum
            {"shard": SHARD, "region": "nobody", "seq": 10**12, "epoch": 10**6},
            # a guess at the format, with a MAC of another key
            ATTACKER.confirmation(SHARD, "standby", 10**6, 10**12, checksum),
            # signed, even: but of a record this leader never wrote
            KEYS.confirmation(SHARD, "standby", epoch, 10**12, "0" * 64),
            # signed, of our seq, but of another record there
            KEYS.confirmation(SHARD, "standby", epoch, seq, "f" * 64),
        ]
        publish(cluster, acks_topic_name(f"t{cluster.tag}"), [orjson.dumps(a) for a in acks])
        direct = httpx.post(
            cluster.url("primary") + "/internal/standby-ack",
            content=orjson.dumps(acks[2]),
            headers={"X-Exdr-Peer-Token": cluster.peer_token},
            timeout=5,
        )
        # the public port serves no peer lane when it has a TLS listener of its own (404);
        # where it does, the forged confirmation is refused (403) or counts for nothing (204)
        assert direct.status_code in (204, 403, 404)
        wait_for(
            lambda: rejected(cluster, "primary", "ahead", "confirmation") >= 1,
            10,
            "the forged confirmation to be counted",
        )
        for _ in range(2):
            assert load.order() == 503, "a command was acknowledged on a forged confirmation"
        assert cluster.metric("primary", "replication_degraded") == 0
        for reason in ("malformed", "bad_mac", "ahead", "mismatch"):
            assert rejected(cluster, "primary", reason, "confirmation") >= 1, reason
        assert alerted(cluster, "primary", "ConfirmationRejected", "ahead")
    finally:
        standby.send_signal(signal.SIGCONT)
    # the standby is back: real confirmations flow again
    wait_for(lambda: load.order() == 201, 20, "a real confirmation")
    settle(cluster, load)


def test_forged_records_at_head_plus_one_are_refused(cluster: Cluster, load: Load) -> None:
    seq, epoch, checksum = head(cluster, "primary")
    # published before the real records (the load is paused): unsigned ones, and ones signed
    # with a guessed key, for the next 30 seqs
    fakes = [
        forged(seq + n, epoch, checksum, keys=None if n % 2 else ATTACKER) for n in range(1, 31)
    ]
    publish(cluster, wal_topic(cluster), [orjson.dumps(f) for f in fakes])
    # the standby reads them while they are still ahead of its head (the peer link would
    # otherwise bring the real records first, and a seq already stored is never looked at)
    wait_for(
        lambda: rejected(cluster, "standby", "bad_mac", "record") >= 1
        and rejected(cluster, "standby", "no_mac", "record") >= 1,
        15,
        "the forged records refused",
    )
    load.resume()
    for _ in range(25):
        assert load.order() == 201
    load.stop()
    settle(cluster, load)
    assert alerted(cluster, "standby", "ReplicationRejected", "bad_mac")
    forged_sums = {f["checksum"] for f in fakes}
    stored = set(checksums(cluster, "standby", seq + 1, seq + 40).values())
    assert not forged_sums & stored


def test_a_signed_record_out_of_its_chain_is_refused(cluster: Cluster, load: Load) -> None:
    seq, epoch, _ = head(cluster, "primary")
    older = checksums(cluster, "primary", seq - 1, seq - 1)[seq - 1]
    # the right key, but it names seq - 1 as its predecessor: a reordered or replayed record
    fake = forged(seq + 1, epoch, older, keys=KEYS)
    publish(cluster, wal_topic(cluster), [orjson.dumps(fake)])
    wait_for(lambda: rejected(cluster, "standby", "chain", "record") >= 1, 10, "the chain refusal")
    for _ in range(5):
        assert load.order() == 201
    settle(cluster, load)
    assert fake["checksum"] not in checksums(cluster, "standby", seq + 1, seq + 1).values()
    assert alerted(cluster, "standby", "ReplicationRejected", "chain")


def test_garbage_with_a_huge_seq_moves_no_bookkeeping(cluster: Cluster, load: Load) -> None:
    garbage = {
        "shard_id": SHARD,
        "epoch": 10**6,
        "seq": 10**12,
        "command_type": "Deposit",
        "command_key": None,
        "recorded_at_us": 1,
        "payload": base64.b64encode(b"\x00\x00\x00\x00").decode(),
        "checksum": "0" * 64,
    }
    publish(cluster, wal_topic(cluster), [orjson.dumps(garbage), b"not even json"])
    wait_for(lambda: rejected(cluster, "standby", "checksum", "record") >= 1, 10, "the refusal")
    assert load.order() == 201
    settle(cluster, load)
    assert cluster.metric("standby", "standby_lag_records") < 50
    assert cluster.metric("standby", "matching_engine_standby_lag_seconds") < 2
    assert alerted(cluster, "standby", "WALRecordCorrupt")


def test_a_payload_naming_os_system_runs_nothing(
    cluster: Cluster, load: Load, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    leaf = {"_type_": "enum", "_data_": ["os:system", f"touch {marker}"]}
    state = orjson.dumps({"amount": {"_type_": "decimal_str", "_data_": "1"}, "side": leaf})
    seq, epoch, checksum = head(cluster, "primary")
    # a plain checksum recomputed over the hostile payload (no key), then the same payload
    # signed with the regions' key, as if a region had been made to write it
    unsigned = forged(seq + 1, epoch, checksum, keys=None, state=state)
    signed = forged(seq + 1, epoch, checksum, keys=KEYS, state=state)
    publish(cluster, wal_topic(cluster), [orjson.dumps(unsigned), orjson.dumps(signed)])
    wait_for(
        lambda: rejected(cluster, "standby", "unknown_type", "record") >= 1,
        10,
        "the signed hostile payload to be refused by its type",
    )
    assert rejected(cluster, "standby", "no_mac", "record") >= 1
    assert alerted(cluster, "standby", "ReplicationRejected", "unknown_type")
    for _ in range(5):
        assert load.order() == 201
    settle(cluster, load)
    assert not marker.exists()
    stored = set(checksums(cluster, "standby", seq + 1, seq + 1).values())
    assert not {unsigned["checksum"], signed["checksum"]} & stored


def test_after_all_that_the_regions_agree_and_a_failover_loses_nothing(
    cluster: Cluster, load: Load
) -> None:
    load.stop()
    settle(cluster, load)
    same_state(cluster)
    acked = dict(load.acked)
    assert acked, "the load placed nothing"
    cluster.stop("primary", signal.SIGKILL)
    wait_for(lambda: cluster.shards("standby")[SHARD]["leader"], 30, "the standby to be promoted")
    seq, count, distinct = cluster.store_heads("standby")[SHARD]
    assert seq == count == distinct >= max(acked.values())
    with psycopg.connect(cluster.dsns["standby"]) as conn:
        refused = conn.execute(
            "SELECT count(*) FROM wal_records WHERE shard_id = %s AND mac IS NULL", (SHARD,)
        ).fetchone()
    assert refused is not None and refused[0] == 0, "an unsigned record was stored"
