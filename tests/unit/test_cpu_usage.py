"""The /proc readings behind the benchmarks' CPU figures."""

from __future__ import annotations

import os

import pytest

from infra.bench.cpu_usage import CpuWindow, parse_proc_stat, parse_process_stat

STAT = """cpu  98038 10 24450 81685 1652 5 2201 4344 0 0
cpu0 49000 5 12000 40000 800 2 1100 2100 0 0
intr 1 2 3
"""


def test_machine_line_splits_busy_idle_and_steal() -> None:
    times = parse_proc_stat(STAT)
    assert times.busy == 98038 + 10 + 24450 + 5 + 2201
    assert times.idle == 81685 + 1652
    assert times.steal == 4344
    assert times.total == times.busy + times.idle + times.steal


def test_a_stat_without_the_cpu_line_is_refused() -> None:
    with pytest.raises(ValueError, match="no cpu line"):
        parse_proc_stat("intr 1 2 3\n")


def test_process_times_survive_a_command_name_with_spaces_and_parentheses() -> None:
    line = "4242 (python (worker) x) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 9 0"
    assert parse_process_stat(line) == 175


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="Linux /proc only")
def test_a_window_over_real_work_reports_this_process() -> None:
    window = CpuWindow({"me": os.getpid()})
    assert sum(range(3_000_000)) > 0  # some CPU, so that a jiffy or more passes
    out = window.stop(commands=10)
    assert out["cores"] == os.cpu_count()
    assert out["machine_busy_pct"] is None or 0 <= out["machine_busy_pct"] <= 100
    if out["machine_busy_pct"] is not None:
        assert out["me_cpu_pct"] is not None and out["me_cpu_pct"] >= 0
        assert out["cpu_ms_per_command"] is not None and out["cpu_ms_per_command"] >= 0
