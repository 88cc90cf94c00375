"""`bench http`: the client's CPU per request, infra/replication/rawhttp.py against httpx.

The peer link's pattern: keep-alive POSTs, one in flight, to a local uvicorn server (uvloop and
httptools, as the facade runs) in a process of its own, so only the client's CPU is counted.
Two shapes: a leader's record push (blocking, a thread of its own, a body of a few KB) and a
standby's confirmation (asyncio, a short JSON body). Each client sends the same requests.
"""

from __future__ import annotations

import multiprocessing
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from infra.replication.rawhttp import ConnectionPool, SocketConnection

ACK = b'{"shard":"shard-1","region":"standby","seq":123456,"epoch":3}'
PATH = "/v1/peer/bench"
PUSH_BODY = b'{"records":"' + b"x" * 4096 + b'"}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI endpoint that reads the body and answers with a confirmation."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(ACK)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": ACK})


def _serve(listening: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(app, loop="uvloop", http="httptools", log_level="warning",
                            access_log=False, lifespan="off", timeout_keep_alive=600)  # fmt: skip
    uvicorn.Server(config).run(sockets=[listening])


WARMUP = 200  # the connection, caches, the allocator


def _per_request(cpu: float, wall: float, requests: int) -> dict[str, float]:
    return {"cpu_us": cpu / requests * 1e6, "wall_us": wall / requests * 1e6}


def _measure(send: Callable[[], int], requests: int) -> dict[str, float]:
    """A thread that sends one request at a time and blocks for its answer (the record push)."""
    for _ in range(WARMUP):
        if send() != 200:
            raise RuntimeError("the bench server did not answer 200")
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(requests):
        send()
    return _per_request(time.process_time() - cpu, time.perf_counter() - wall, requests)


async def _measure_async(send: Callable[[], Awaitable[int]], requests: int) -> dict[str, float]:
    """A task on a running loop that awaits one request at a time (the confirmations)."""
    for _ in range(WARMUP):
        if await send() != 200:
            raise RuntimeError("the bench server did not answer 200")
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(requests):
        await send()
    return _per_request(time.process_time() - cpu, time.perf_counter() - wall, requests)


def _request(port: int, body: bytes) -> bytes:
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Exdr-Peer-Token: t\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


HEADERS = {"X-Exdr-Peer-Token": "t", "Content-Type": "application/json"}


def _push(port: int, body: bytes, requests: int) -> dict[str, dict[str, float]]:
    request = _request(port, body)
    raw = SocketConnection("127.0.0.1", port, 5.0)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
        results = {
            "rawhttp": _measure(lambda: raw.exchange(request)[0], requests),
            "httpx": _measure(
                lambda: client.post(PATH, content=body, headers=HEADERS).status_code, requests
            ),
        }
    raw.close()
    return results


async def _confirm(port: int, body: bytes, requests: int) -> dict[str, dict[str, float]]:
    request = _request(port, body)
    pool = ConnectionPool("127.0.0.1", port, 1)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:

        async def with_httpx() -> int:
            return (await client.post(PATH, content=body, headers=HEADERS)).status_code

        results = {
            "rawhttp": await _measure_async(lambda: pool.send(request), requests),
            "httpx": await _measure_async(with_httpx, requests),
        }
    pool.close()
    return results


def run_http_clients(*, requests: int = 3000, rounds: int = 3) -> dict[str, Any]:
    """Median over `rounds` interleaved rounds of `requests` each, per client and shape."""
    import uvloop

    # listening before the server process starts: requests wait in the backlog, none is lost
    listening = socket.create_server(("127.0.0.1", 0))
    port = int(listening.getsockname()[1])
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(listening,))
    server.start()
    try:
        samples: dict[str, list[dict[str, float]]] = {}
        for _ in range(rounds):
            for shape, results in (
                ("push_4kb", _push(port, PUSH_BODY, requests)),
                ("confirm", uvloop.run(_confirm(port, ACK, requests))),
            ):
                for name, figures in results.items():
                    samples.setdefault(f"{shape}_{name}", []).append(figures)
    finally:
        server.terminate()
        server.join(5)
        listening.close()
    result: dict[str, Any] = {"requests": requests, "rounds": rounds}
    for key, runs in samples.items():
        result[f"{key}_cpu_us"] = round(statistics.median(r["cpu_us"] for r in runs), 1)
        result[f"{key}_wall_us"] = round(statistics.median(r["wall_us"] for r in runs), 1)
    return result
