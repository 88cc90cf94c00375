"""What the projections need to know of the deployment: the broker, topic names, a data folder.

A protocol, so that the process settings (infra's `Settings`, read once from the environment)
satisfy it as they are and projections never import infra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


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
