"""The peer lane: a standby's direct confirmation, and a leader's run of records, are taken only
with the regions' shared token; a run is answered with the standby's confirmation."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import orjson
import pytest

from infra.api.peer import PATH, PeerAckLane
from infra.replication.peer_link import WAL_PATH
from projections.replication.relay import encode_run
from tests.unit.wal_records import sealed_records


def _request(
    lane: PeerAckLane, body: bytes, token: bytes | None, method: str = "POST", path: str = PATH
) -> tuple[int, bytes]:
    headers = [(b"content-type", b"application/json")]
    if token is not None:
        headers.append((b"x-exdr-peer-token", token))
    scope = {"type": "http", "path": path, "method": method, "headers": headers}
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(lane(scope, receive, send))
    assert sent[1]["type"] == "http.response.body"
    return int(sent[0]["status"]), bytes(sent[1]["body"])


def _call(lane: PeerAckLane, body: bytes, token: bytes | None, method: str = "POST") -> int:
    status, answer = _request(lane, body, token, method)
    assert answer == b""
    return status


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
    assert _call(lane, b'{"shard":"shard-1","seq":42}', token) == 401
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


def test_the_record_route_answers_with_the_standby_confirmation() -> None:
    taken: list[tuple[str, bytes]] = []
    standby = {"shard-1": True, "shard-2": False}

    def take(shard: str, body: bytes) -> asyncio.Future[dict[str, Any] | None] | None:
        if shard not in standby:
            raise KeyError(shard)
        if not standby[shard]:
            return None
        taken.append((shard, body))
        done: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        done.set_result({"shard": shard, "region": "standby", "seq": 7, "epoch": 2})
        return done

    lane = PeerAckLane("s3cret", lambda ack: None, take)
    body = encode_run(sealed_records(2), set())
    status, answer = _request(lane, body, b"s3cret", path=WAL_PATH + "shard-1")
    assert status == 200 and orjson.loads(answer)["seq"] == 7
    assert taken == [("shard-1", body)]
    assert _request(lane, body, b"wrong", path=WAL_PATH + "shard-1")[0] == 401
    assert _request(lane, body, b"s3cret", path=WAL_PATH + "shard-2")[0] == 409
    assert _request(lane, body, b"s3cret", path=WAL_PATH + "shard-9")[0] == 404
    assert len(taken) == 1
    # without an intake the route does not exist
    assert not PeerAckLane("s3cret", lambda ack: None).takes(
        {"type": "http", "path": WAL_PATH + "shard-1"}
    )


@pytest.mark.parametrize(
    ("token", "length", "status"),
    [(b"wrong", b"10", 401), (None, b"67108864", 401), (b"s3cret", b"67108865", 413)],
)
def test_a_refusal_from_the_head_never_reads_the_body(
    token: bytes | None, length: bytes, status: int
) -> None:
    lane = PeerAckLane("s3cret", lambda ack: None, lambda shard, body: None)
    headers = [(b"content-length", length)]
    if token is not None:
        headers.append((b"x-exdr-peer-token", token))
    scope = {"type": "http", "path": WAL_PATH + "shard-1", "method": "POST", "headers": headers}
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(lane(scope, receive, send))
    assert sent[0]["status"] == status
    assert (b"connection", b"close") in sent[0]["headers"]
