"""CPU threads that follow the free cores.

Torch's intra-op threads meet at a barrier after every parallel region: hundreds per training
step of a recurrent model. When another process holds one of the cores, each barrier waits for
the thread the scheduler put aside, and a 2-thread step on 2 shared cores runs many times
slower than on one thread. :class:`CoreMeter` measures how many cores other processes keep busy
(``/proc/stat`` minus this process's own CPU time), and :func:`threads_for` turns that into a
thread count: as many threads as there are free cores, at least one, at most the starting count.
``zoo.callbacks.FollowFreeCores`` re-checks it every few seconds while a model trains.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

STAT = Path("/proc/stat")


def usable_cpus() -> list[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _busy_seconds(cpus: list[int], text: str) -> float | None:
    """Seconds the given CPUs spent on anything but idle and I/O wait, from ``/proc/stat``."""
    wanted = {f"cpu{i}" for i in cpus}
    hertz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = 0
    found = False
    for line in text.splitlines():
        name, *fields = line.split()
        if name in wanted:
            values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
            busy += sum(values) - values[3] - values[4]
            found = True
    return busy / hertz if found else None


class CoreMeter:
    """Cores other processes keep busy, averaged since the last :meth:`others` call."""

    def __init__(self, cpus: list[int] | None = None) -> None:
        self.cpus = cpus if cpus is not None else usable_cpus()
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        try:
            busy = _busy_seconds(self.cpus, STAT.read_text())
        except OSError:
            return None
        if busy is None:
            return None
        own = os.times()
        return time.monotonic(), busy, own.user + own.system

    def others(self) -> float | None:
        """Cores used by other processes (0.0 to ``len(cpus)``), None where unmeasurable."""
        now = self._sample()
        last, self._last = self._last, now
        if now is None or last is None or now[0] - last[0] <= 0:
            return None
        wall = now[0] - last[0]
        others = ((now[1] - last[1]) - (now[2] - last[2])) / wall
        return min(max(others, 0.0), float(len(self.cpus)))


def threads_for(cpus: int, others: float, most: int) -> int:
    """Threads for ``cpus`` cores of which other processes keep ``others`` busy: the free
    cores, rounded half up, at least 1 and at most ``most``."""
    return max(1, min(most, int(cpus - others + 0.5)))
