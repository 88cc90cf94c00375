"""The peer link's sender over a real loopback connection: runs in commit order, one request
in flight (what commits meanwhile goes in the next run), answers taken as confirmations, a
standby that goes away costs the link its records (the topic has them), not its thread, and a
link warmed up before a promotion sends its first run on the connection it already opened."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from infra.drills.cluster import free_port, wait_for
from infra.replication.peer_link import WAL_PATH, RecordPush
from projections.replication.relay import encode_run
from tests.unit.wal_records import sealed_records

SHARD = "shard-1"


class _Standby(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, delay_s: float) -> None:
        self.runs: list[list[int]] = []
        self.tokens: set[str] = set()
        self.delay_s = delay_s
        self.connections = 0
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        super().process_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Standby

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.tokens.add(self.headers["X-Exdr-Peer-Token"])
        assert self.path == WAL_PATH + SHARD
        seqs = [r["seq"] for r in orjson.loads(body)["records"]]
        time.sleep(self.server.delay_s)
        self.server.runs.append(seqs)
        answer = orjson.dumps({"shard": SHARD, "region": "standby", "seq": seqs[-1], "epoch": 1})
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


def _serve(port: int, delay_s: float = 0.0) -> _Standby:
    server = _Standby(port, delay_s)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _push(port: int, confirmed: list[int], **options: float) -> RecordPush:
    return RecordPush(
        SHARD,
        "standby",
        f"http://127.0.0.1:{port}",
        "s3cret",
        lambda records: encode_run(records, set()),
        lambda ack: confirmed.append(int(ack["seq"])),
        **options,
    )


def test_runs_follow_commit_order_and_answers_confirm() -> None:
    port = free_port()
    server = _serve(port, delay_s=0.05)
    confirmed: list[int] = []
    push = _push(port, confirmed)
    push.start()
    try:
        for first in range(1, 201, 4):  # 50 commits of 4 records, faster than the standby
            push.offer(sealed_records(4, first=first))
            time.sleep(0.002)
        wait_for(lambda: confirmed and confirmed[-1] == 200, 10, "every record confirmed")
    finally:
        push.stop()
        server.shutdown()
    sent = [seq for run in server.runs for seq in run]
    assert sent == list(range(1, 201))
    assert len(server.runs) < 50  # runs grew while a request was in flight
    assert confirmed == sorted(confirmed) and push.up is True
    assert server.tokens == {"s3cret"}


def test_a_standby_that_goes_away_costs_records_not_the_link() -> None:
    port = free_port()
    confirmed: list[int] = []
    push = _push(port, confirmed, timeout_s=0.5, retry_s=0.1)
    push.start()
    try:
        push.offer(sealed_records(3))  # nobody listens: dropped
        wait_for(lambda: push.up is False, 5, "the link to report the standby down")
        assert push.dropped >= 3 and confirmed == []
        server = _serve(port)
        time.sleep(0.2)
        push.offer(sealed_records(3, first=4))
        wait_for(lambda: confirmed == [6], 5, "the link to come back")
        assert server.runs == [[4, 5, 6]] and push.up is True
        server.shutdown()
    finally:
        push.stop()


def test_a_warmed_up_link_sends_its_first_run_on_the_connection_it_opened() -> None:
    port = free_port()
    server = _serve(port)
    confirmed: list[int] = []
    push = _push(port, confirmed)
    push.warm_up()
    try:
        wait_for(lambda: server.connections == 1, 5, "the warm-up to connect")
        push.offer(sealed_records(2))  # not started yet: nothing is taken
        assert server.runs == []
        push.start()
        push.offer(sealed_records(2, first=1))
        wait_for(lambda: confirmed == [2], 5, "the first run confirmed")
        assert server.connections == 1 and server.runs == [[1, 2]]
    finally:
        push.stop()
        server.shutdown()


def test_a_warm_up_not_followed_by_start_lets_go_and_a_later_start_still_sends() -> None:
    port = free_port()
    server = _serve(port)
    confirmed: list[int] = []
    push = _push(port, confirmed)
    push.warm_up(for_s=0.2)
    try:
        wait_for(lambda: server.connections == 1, 5, "the warm-up to connect")
        thread = push._thread
        assert thread is not None
        thread.join(5)
        assert not thread.is_alive()  # the promotion was refused: the link let go
        push.start()
        push.offer(sealed_records(3))
        wait_for(lambda: confirmed == [3], 5, "a run after the later start")
        assert server.connections == 2 and server.runs == [[1, 2, 3]]
    finally:
        push.stop()
        server.shutdown()
