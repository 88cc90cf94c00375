"""What the projections need to know of the deployment: the broker, topic names, a data folder.

A protocol, so that the process settings (infra's `Settings`, read once from the environment)
satisfy it as they are and projections never import infra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from application.wal.auth import ReplicationKeys


class KafkaSecurity(Protocol):
    """How the Kafka clients authenticate and encrypt (PLAINTEXT for the local broker)."""

    @property
    def protocol(self) -> str:
        """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
        ...

    @property
    def sasl_mechanism(self) -> str: ...

    @property
    def username(self) -> str: ...

    @property
    def password(self) -> str: ...

    @property
    def ca_file(self) -> Path | None:
        """CA bundle that signs the brokers' certificates (None: the system's CAs)."""
        ...

    @property
    def tls(self) -> bool:
        """Whether the connection is encrypted (SSL or SASL_SSL)."""
        ...


class BrokerSettings(Protocol):
    @property
    def kafka_bootstrap(self) -> str:
        """``host:port[,host:port...]`` of the Kafka bootstrap servers."""
        ...

    @property
    def topic_prefix(self) -> str:
        """First part of every topic and consumer group name (projections/topics.py)."""
        ...

    @property
    def kafka_fetch_wait_ms(self) -> int | None:
        """Longest a consumer's fetch waits on the broker; None: the caller's default."""
        ...

    @property
    def var_dir(self) -> Path:
        """Where Faust keeps its data folders."""
        ...

    @property
    def kafka_security(self) -> KafkaSecurity:
        """The Kafka clients' security settings."""
        ...

    def replication_keys(self) -> ReplicationKeys:
        """The keys WAL records are verified with (the regions' shared MAC key)."""
        ...
