"""What the machine's CPUs did over a benchmark's measured phase, read from Linux's /proc.

A latency figure is only comparable with another one taken on a machine as busy: the benchmarks
run both regions, the broker, PostgreSQL and the load generators on the same cores, so a
result reports how busy those cores were (and how much the hypervisor took: steal), what each
region's process used, and the CPU spent per command on the whole machine.

Elsewhere than Linux the readings are None and the benchmark reports none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class MachineTimes:
    """Cumulative jiffies of all CPUs (the first line of /proc/stat)."""

    busy: int  # user + nice + system + irq + softirq
    idle: int  # idle + iowait
    steal: int

    @property
    def total(self) -> int:
        return self.busy + self.idle + self.steal


def parse_proc_stat(text: str) -> MachineTimes:
    """The `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal ..."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:9]] + [0] * (8 - len(fields[1:9]))
            user, nice, system, idle, iowait, irq, softirq, steal = values
            return MachineTimes(user + nice + system + irq + softirq, idle + iowait, steal)
    raise ValueError("no cpu line in /proc/stat")


def parse_process_stat(text: str) -> int:
    """utime + stime (jiffies) from /proc/<pid>/stat; the command name may hold spaces."""
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine_times() -> MachineTimes | None:
    try:
        return parse_proc_stat((PROC / "stat").read_text())
    except (OSError, ValueError):
        return None


def process_jiffies(pid: int) -> int | None:
    try:
        return parse_process_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


class CpuWindow:
    """Readings at the start and end of a phase: `CpuWindow(pids).stop(commands)`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.cores = os.cpu_count() or 1
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._machine = machine_times()
        self._procs = {name: process_jiffies(pid) for name, pid in pids.items()}

    def stop(self, commands: int) -> dict[str, float | int | None]:
        end = machine_times()
        out: dict[str, float | int | None] = {"cores": self.cores}
        if self._machine is None or end is None or end.total <= self._machine.total:
            return out | {"machine_busy_pct": None, "machine_steal_pct": None}
        total = end.total - self._machine.total  # jiffies of all cores together
        busy = end.busy - self._machine.busy
        seconds = total / self.hz / self.cores
        out["machine_busy_pct"] = round(100 * busy / total, 1)
        out["machine_steal_pct"] = round(100 * (end.steal - self._machine.steal) / total, 1)
        for name, pid in self.pids.items():
            before, after = self._procs.get(name), process_jiffies(pid)
            used = None if before is None or after is None else after - before
            # percent of one core, as top shows a process
            out[f"{name}_cpu_pct"] = (
                None if used is None else round(100 * used / self.hz / seconds, 1)
            )
        out["cpu_ms_per_command"] = round(1000 * busy / self.hz / commands, 3) if commands else None
        return out
