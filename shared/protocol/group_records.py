"""A worker group's records: each rank's beat counter, and the line that ended the group.

Counters, not times: the ranks may be Macs whose clocks differ; each rank sees another's
counter move (or not) by its own clock.
"""

from shared.protocol.common import PREFIX


def group_beat_key(group: str, rank: int) -> str:
    return f"{PREFIX}:group:{group}:beat:{rank}"


def group_ended_key(group: str) -> str:
    """Why the group ended (one line), set by the rank that saw it first."""
    return f"{PREFIX}:group:{group}:ended"


def group_wake_key(group: str, rank: int) -> str:
    """Rank 0's wake-ups for an idle follower (worker/group/wake.py)."""
    return f"{PREFIX}:group:{group}:wake:{rank}"
