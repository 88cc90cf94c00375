"""The idempotency key filter: never 'new' for a key it holds, rarely 'maybe' for one it lacks."""

from __future__ import annotations

from uuid import uuid4

from hypothesis import given
from hypothesis import strategies as st

from application.shard.keyfilter import KeyFilter


@given(st.lists(st.text(min_size=1, max_size=40), max_size=300))
def test_no_key_added_is_ever_reported_new(keys: list[str]) -> None:
    f = KeyFilter(capacity=16)  # small: the property must hold across layers too
    for key in keys:
        f.add(key)
    assert all(key in f for key in keys)


def test_false_positives_stay_near_the_configured_rate_while_it_grows() -> None:
    f = KeyFilter(capacity=1000, error=0.001)
    added = [str(uuid4()) for _ in range(20_000)]
    for key in added:
        f.add(key)
    assert f.layers > 1
    assert all(key in f for key in added)
    others = [str(uuid4()) for _ in range(20_000)]
    false_positives = sum(key in f for key in others)
    assert false_positives < 20_000 * 0.001 * f.layers * 3
