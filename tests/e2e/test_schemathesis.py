"""Schemathesis against the live /openapi.json: every operation, no 5xx, schema-conformant."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.e2e.conftest import NewAccount, Served

POSITIVE_CASES = 60
NEGATIVE_CASES = 30
PROBES = ("/primary", "/replica")


def fuzz(operation: Any, mode: GenerationMode, examples: int, base_url: str,
         headers: dict[str, str], on_call: Callable[[], None]) -> None:
    """Run `examples` generated cases of one operation, validating every response."""

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        # The caller's key goes along unless the case itself is about that header.
        sent = {**headers, **(case.headers or {})}
        # positive_data_acceptance is off: schema-valid is not domain-valid (an unknown symbol
        # or too little margin is a 4xx by design).
        # A probe's 503 is its documented answer ("not in that role"), checked by the schema
        # conformance checks instead; everywhere else any 5xx fails.
        excluded = [positive_data_acceptance]
        if case.operation.path in PROBES:
            excluded.append(not_a_server_error)
        case.call_and_validate(base_url=base_url, headers=sent, excluded_checks=excluded)
        on_call()

    run()


def test_generated_requests_conform(served: Served, new_account: NewAccount) -> None:
    # An operator holding margin: valid bodies sometimes place real orders, and the operator
    # endpoint answers 200 rather than 403.
    caller = new_account(operator=True, funding=True)
    headers = {"Authorization": f"Bearer {caller.token}"}  # type: ignore[attr-defined]
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    calls: dict[str, int] = {}

    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"

        def count(label: str = label) -> None:
            calls[label] = calls.get(label, 0) + 1

        fuzz(operation, GenerationMode.POSITIVE, POSITIVE_CASES, served.url, headers, count)
        if operation.path not in ("/health", "/primary", "/metrics"):  # nothing to get wrong
            fuzz(operation, GenerationMode.NEGATIVE, NEGATIVE_CASES, served.url, headers, count)

    paths = {f"{op.method.upper()} {op.path}" for op in operations}
    assert set(calls) == paths, f"never called: {paths - set(calls)}"
    assert sum(calls.values()) >= 500, calls
    print(f"schemathesis: {sum(calls.values())} cases over {len(paths)} operations")
