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


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy so far (Linux /proc/stat; 0 elsewhere), so that
    the share of other work on the machine can be told apart from the systems' own."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10])  # already counted in user and nice
    return (sum(fields) - idle - guest) / _TICKS
