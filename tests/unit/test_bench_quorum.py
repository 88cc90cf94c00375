"""The quorum benchmark's interleaving: two and three replicas get the same share of the run,
each as often first as second, so a steady drift of the machine's load weighs on both alike."""

from __future__ import annotations

import pytest

from infra.bench.quorum import slice_order


def test_slices_alternate_two_and_three_replicas_in_abba_order() -> None:
    assert slice_order(2) == [2, 3]
    assert slice_order(4) == [2, 3, 3, 2]
    order = slice_order(8)
    assert order == [2, 3, 3, 2, 2, 3, 3, 2]
    assert order.count(2) == order.count(3)
    # a load rising linearly over the run weighs the same on both: equal sums of positions
    assert sum(i for i, n in enumerate(order) if n == 2) == sum(
        i for i, n in enumerate(order) if n == 3
    )


@pytest.mark.parametrize("slices", [0, 1, 3])
def test_an_odd_or_empty_plan_is_refused(slices: int) -> None:
    with pytest.raises(ValueError, match="even"):
        slice_order(slices)
