"""CPU time of the processes that make up a system under test (Linux /proc).

Wall time on a shared 2-core machine swings with other load; CPU time spent per token by a
system's own processes swings much less, so it is reported beside the throughput.
"""

import os
from collections.abc import Sequence

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by these processes (all their threads)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # not Linux, or the process is gone: the column then reads low
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS
