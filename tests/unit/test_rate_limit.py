"""Token buckets of the API's rate limits: refill, Retry-After, a bounded number of buckets."""

from __future__ import annotations

import pytest

from infra.api.ratelimit import Buckets
from infra.security_settings import SecuritySettings


def test_a_burst_then_the_rate() -> None:
    buckets = Buckets(rate=10, burst=3)
    assert [buckets.take("k", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k", 0.0) == pytest.approx(0.1)  # a token comes back in 1/rate
    assert buckets.take("k", 0.1) == 0.0
    assert buckets.take("k", 0.1) > 0
    assert buckets.take("other", 0.1) == 0.0  # buckets are per name


def test_a_full_bucket_does_not_overflow_its_burst() -> None:
    buckets = Buckets(rate=1, burst=2)
    buckets.take("k", 0.0)
    assert [buckets.take("k", 1000.0) for _ in range(3)][2] > 0


def test_made_up_names_cost_no_more_than_the_bound() -> None:
    buckets = Buckets(rate=1, burst=1, max_entries=100)
    for n in range(10_000):
        buckets.take(f"addr-{n}", 0.0)
    assert len(buckets) == 100


def test_limits_are_settings() -> None:
    s = SecuritySettings.from_env({"EXDR_RATE_LIMIT_KEY": "5", "EXDR_RATE_LIMIT_ADDRESS": "0"})
    assert (s.rate_per_key, s.burst_per_key, s.rate_per_address) == (5, 10, 0)
    with pytest.raises(ValueError, match="EXDR_RATE_LIMIT_KEY"):
        SecuritySettings.from_env({"EXDR_RATE_LIMIT_KEY": "-1"})
    with pytest.raises(ValueError, match="EXDR_KAFKA_SASL_USERNAME"):
        SecuritySettings.from_env({"EXDR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(ValueError, match="EXDR_TLS_KEY"):
        SecuritySettings.from_env({"EXDR_TLS_CERT": "/etc/hostname"})
