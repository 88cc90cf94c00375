"""The peer lane: a standby's direct confirmation is taken only with the regions' shared token."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest

from infra.api.peer import PATH, PeerAckLane


def _call(lane: PeerAckLane, body: bytes, token: bytes | None, method: str = "POST") -> int:
    headers = [(b"content-type", b"application/json")]
    if token is not None:
        headers.append((b"x-exdr-peer-token", token))
    scope = {"type": "http", "path": PATH, "method": method, "headers": headers}
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(lane(scope, receive, send))
    assert sent[1] == {"type": "http.response.body", "body": b""}
    return int(sent[0]["status"])


def test_a_confirmation_with_the_token_is_taken() -> None:
    taken: list[dict[str, Any]] = []
    lane = PeerAckLane("s3cret", taken.append)
    body = b'{"shard":"shard-1","region":"standby","seq":42,"epoch":3}'
    assert _call(lane, body, b"s3cret") == 204
    assert taken == [{"shard": "shard-1", "region": "standby", "seq": 42, "epoch": 3}]


@pytest.mark.parametrize("token", [None, b"", b"wrong", b"s3cret "])
def test_without_the_token_nothing_is_taken(token: bytes | None) -> None:
    taken: list[dict[str, Any]] = []
    lane = PeerAckLane("s3cret", taken.append)
    assert _call(lane, b'{"shard":"shard-1","seq":42}', token) == 403
    assert taken == []


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[1,2]", b'{"shard":"shard-1"}', b'{"shard":"s","seq":"x"}']
)
def test_a_malformed_confirmation_is_refused(body: bytes) -> None:
    taken: list[dict[str, Any]] = []
    lane = PeerAckLane("s3cret", taken.append)
    assert _call(lane, body, b"s3cret") == 400
    assert taken == []


def test_only_post_and_only_with_a_token_configured() -> None:
    lane = PeerAckLane("s3cret", lambda ack: None)
    assert _call(lane, b"", b"s3cret", method="GET") == 405
    with pytest.raises(ValueError):
        PeerAckLane("", lambda ack: None)
