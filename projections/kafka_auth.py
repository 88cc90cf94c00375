"""The Kafka clients' security (EXDR_KAFKA_SECURITY_PROTOCOL and friends) in the forms Faust
and aiokafka take: PLAINTEXT for the local broker, SASL_SSL (or SSL, SASL_PLAINTEXT) for a
secured Apache Kafka. One mapping, Faust's own, so the workers' consumers and producers and
our admin client always agree.
"""

from __future__ import annotations

import ssl
from typing import Any

from faust.auth import Credentials, SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from projections.settings import KafkaSecurity


def _tls_context(security: KafkaSecurity) -> ssl.SSLContext:
    """The broker's certificate checked against EXDR_KAFKA_CA (else the system's CAs)."""
    cafile = str(security.ca_file) if security.ca_file is not None else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def kafka_credentials(security: KafkaSecurity) -> Credentials | None:
    """Faust's `broker_credentials`; None for PLAINTEXT."""
    if security.protocol == "PLAINTEXT":
        return None
    if security.protocol == "SSL":
        return SSLCredentials(_tls_context(security))
    return SASLCredentials(
        username=security.username,
        password=security.password,
        mechanism=security.sasl_mechanism,
        ssl_context=_tls_context(security) if security.tls else None,
    )


def aiokafka_security(security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments of aiokafka's clients (admin, producer, consumer)."""
    return dict(credentials_to_aiokafka_auth(kafka_credentials(security)))
