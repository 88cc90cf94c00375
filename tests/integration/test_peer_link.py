"""The peer link's sender over a real loopback connection: runs in commit order, one request
in flight (what commits meanwhile goes in the next run), answers taken as confirmations, and a
standby that goes away costs the link its records (the topic has them), not its thread."""

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
        super().__init__(("127.0.0.1", port), _Handler)


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
