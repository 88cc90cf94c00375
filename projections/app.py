"""The faust.App every worker of ours runs on, tuned to join its group and fetch in milliseconds.

With Faust's defaults a consumer group takes about 30 s to form on our broker, and a fetch with
no data waits up to 1.5 s (aiokafka's `fetch_max_wait_ms`, fixed inside Faust's driver with no
setting); tansu does not answer a waiting fetch early when data arrives, so that wait is pure
latency. Timeouts are lowered here and the fetch wait is set through a small transport subclass.
Exactly once never comes from Kafka (no transactions on our broker): it comes from tracking rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from projections.settings import BrokerSettings

REBALANCE_TIMEOUT_S = 2.0
SESSION_TIMEOUT_S = 2.0
HEARTBEAT_INTERVAL_S = 0.3
FETCH_MAX_WAIT_MS = 10
"""Longest a fetch with no new data waits on the broker (`BrokerSettings.kafka_fetch_wait_ms`
overrides it). Apache Kafka answers a waiting fetch as soon as data arrives, so there a long
wait (500) costs no latency; a broker that only answers at the deadline (tansu) makes it the
floor of every hop's latency, traded against the CPU of polling more often."""


PEER_LINK_FETCH_WAIT_MS = 100
"""A node whose records also travel on the peer link (infra/replication/peer_link.py) reads
the topic as its second path: a tenth of the fetches (and of the broker's and the consumer's
CPU) for latency only while the link is down."""


class _LowWaitConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # read by AIOKafkaConsumer.start() when it builds its Fetcher
        consumer._fetch_max_wait_ms = getattr(transport.app, "fetch_wait_ms", FETCH_MAX_WAIT_MS)
        return consumer


class _LowWaitConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _LowWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)


class LowWaitTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with a short broker-side fetch wait."""

    Consumer = _LowWaitConsumer


def broker_url(settings: BrokerSettings) -> str:
    """Faust's broker URL list for the configured bootstrap servers."""
    return ";".join(f"kafka://{hp.strip()}" for hp in settings.kafka_bootstrap.split(","))


def make_faust_app(
    settings: BrokerSettings, name: str, *, fetch_wait_ms: int = FETCH_MAX_WAIT_MS, **overrides: Any
) -> faust.App:
    """A Faust app (group id = `name`) that joins in about 2 s and consumes with low latency.

    `fetch_wait_ms` is the caller's default for the broker-side fetch wait; a configured
    `kafka_fetch_wait_ms` takes precedence over it.

    No web server, no exactly_once guarantee (the broker has no transactions), a data directory
    under the settings' `var_dir`, and new groups start at the earliest offset: our tracking
    rows decide what is applied, so reading from the start is only ever redundant, never wrong.
    """
    options: dict[str, Any] = {
        "broker": broker_url(settings),
        "web_enabled": False,
        "broker_rebalance_timeout": REBALANCE_TIMEOUT_S,
        "broker_session_timeout": SESSION_TIMEOUT_S,
        "broker_heartbeat_interval": HEARTBEAT_INTERVAL_S,
        "consumer_auto_offset_reset": "earliest",
        "processing_guarantee": "at_least_once",
        "topic_partitions": 1,
        "datadir": str(settings.var_dir / "faust" / name),
        "producer_linger": 0.0,
    }
    options.update(overrides)
    Path(options["datadir"]).parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(name, **options)
    app.fetch_wait_ms = settings.kafka_fetch_wait_ms or fetch_wait_ms  # type: ignore[attr-defined]
    app.transport = LowWaitTransport(app.conf.broker_consumer, app)
    return app
