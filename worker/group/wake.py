"""Idle followers wait for rank 0 in Redis, not in a collective.

MLX's ring backend waits for a peer's message by polling its socket, so a follower that sat
in the collective for rank 0's next plan kept a core busy for as long as the group had
nothing to do. When a turn leaves the group without jobs (every rank knows it: the ranks stay
in step), rank 0 pushes a wake-up naming the next turn to each follower's list before it
shares that turn's plan, and the followers block on their list (BLPOP) until it comes. A lost
or late wake-up costs a follower at most WAKE_WAIT_S, never a deadlock: it then joins the
collective anyway (an idle rank 0 shares a plan at least every IDLE_TURN_S,
worker/group/engine.py), and the wake-up that comes after it is dropped as old, not taken for
the next turn's.
"""

import logging
import time
from typing import Any

import redis

from shared import protocol

log = logging.getLogger(__name__)

WAKE_WAIT_S = 7
"""Longer than rank 0's idle turn (5 s), shorter than the connection's socket timeout."""
WAKE_TTL_S = 60
"""An unread wake-up (its follower gone) does not outlive the group by long."""


class IdleWake:
    def __init__(self, connection: redis.Redis, group: str, rank: int, size: int) -> None:
        self._redis = connection
        self._group = group
        self._rank = rank
        self._size = size

    def wake_followers(self, turn: int) -> None:
        """Rank 0: the plan of ``turn`` (the ranks' count of shared plans) comes next."""
        try:
            pipe = self._redis.pipeline(transaction=False)
            for rank in range(1, self._size):
                key = protocol.group_wake_key(self._group, rank)
                pipe.rpush(key, turn)
                pipe.expire(key, WAKE_TTL_S)
            pipe.execute()
        except redis.RedisError:
            log.warning("could not wake the idle ranks (they join within %d s)", WAKE_WAIT_S)

    def wait(self, turn: int) -> None:
        """A follower with no jobs: until rank 0's wake-up for ``turn``, or WAKE_WAIT_S."""
        key = protocol.group_wake_key(self._group, self._rank)
        deadline = time.monotonic() + WAKE_WAIT_S
        try:
            while (left := deadline - time.monotonic()) > 0:
                popped: Any = self._redis.blpop([key], max(1, int(left)))
                if popped is None or int(popped[1]) >= turn:
                    return
        except redis.RedisError:
            log.debug("could not wait for rank 0's wake-up in Redis", exc_info=True)
