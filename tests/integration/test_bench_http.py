"""`bench http` measures both clients on both shapes of the peer link and reports per request."""

from __future__ import annotations

from infra.bench.http_clients import run_http_clients


def test_both_clients_answer_on_both_shapes() -> None:
    result = run_http_clients(requests=50, rounds=1)
    for shape in ("push_4kb", "confirm"):
        for client in ("rawhttp", "httpx"):
            assert result[f"{shape}_{client}_cpu_us"] > 0
            assert result[f"{shape}_{client}_wall_us"] > 0
