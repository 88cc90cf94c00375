"""The local servers answer the way the rest of the suite relies on.

Run ``scripts/services.sh start`` first (``make test`` does). These tests never skip: a server
that is down is a failure, with the fix in the message.
"""

from __future__ import annotations

import asyncio
import socket
import uuid

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from kazoo.client import KazooClient

from infra.settings import Settings

pytestmark = pytest.mark.integration

HINT = "is it running? try: scripts/services.sh start"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.from_env()


def test_postgres_answers_and_database_exists(settings: Settings) -> None:
    try:
        conn = psycopg.connect(settings.pg_dsn, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {settings.pg_dsn}: {exc}; {HINT}")
    with conn:
        row = conn.execute("select current_database(), current_setting('server_version_num')")
        database, version = row.fetchone() or ("", "0")
    assert database == settings.pg_dsn.rsplit("/", 1)[-1].split("?")[0]
    assert int(version) >= 150000


def _zk_four_letter(hostport: str, word: str) -> str:
    host, port = hostport.split(",")[0].split("/")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(word.encode())
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def test_zookeeper_allows_short_sessions(settings: Settings) -> None:
    """Failover drills rely on sub-second session expiry (tickTime=200 -> min 400 ms)."""
    try:
        conf = _zk_four_letter(settings.zk_hosts, "conf")
    except OSError as exc:
        pytest.fail(f"ZooKeeper at {settings.zk_hosts}: {exc}; {HINT}")
    values = dict(line.split("=", 1) for line in conf.splitlines() if "=" in line)
    assert values.get("minSessionTimeout") == "400", conf


def test_zookeeper_ephemeral_node_lives_with_its_session(settings: Settings) -> None:
    path = f"/exdr-test/{uuid.uuid4().hex}"
    owner = KazooClient(hosts=settings.zk_hosts, timeout=2.0)
    watcher = KazooClient(hosts=settings.zk_hosts, timeout=2.0)
    try:
        owner.start(timeout=5)
        watcher.start(timeout=5)
    except Exception as exc:
        pytest.fail(f"ZooKeeper at {settings.zk_hosts}: {exc!r}; {HINT}")
    try:
        owner.create(path, b"leader", ephemeral=True, makepath=True)
        data, stat = watcher.get(path)
        assert data == b"leader"
        assert stat.ephemeralOwner == owner.client_id[0]

        owner.delete(path)
        assert watcher.exists(path) is None

        # The node of a closed session is gone for everyone else: what leadership relies on.
        owner.create(path, b"leader", ephemeral=True)
        owner.stop()
        owner.close()
        assert watcher.exists(path) is None
    finally:
        for client in (owner, watcher):
            client.stop()
            client.close()


async def _kafka_round_trip(bootstrap: str) -> list[tuple[bytes | None, bytes | None]]:
    topic = f"exdr-test-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, b"payload-%d" % i, key=b"shard-1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        received: list[tuple[bytes | None, bytes | None]] = []
        while len(received) < 3:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                received.extend((r.key, r.value) for r in records)
        return received
    finally:
        await consumer.stop()


def test_kafka_produces_and_consumes_on_a_fresh_topic(settings: Settings) -> None:
    try:
        received = asyncio.run(
            asyncio.wait_for(_kafka_round_trip(settings.kafka_bootstrap), timeout=30)
        )
    except Exception as exc:
        pytest.fail(f"Kafka at {settings.kafka_bootstrap}: {exc!r}; {HINT}")
    assert received == [(b"shard-1", b"payload-%d" % i) for i in range(3)]
