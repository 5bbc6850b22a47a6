"""Idle followers wait for rank 0 in Redis, not in a collective.

MLX's ring backend waits for a peer's message by polling its socket, so a follower that sat
in the collective for rank 0's next plan kept a core busy for as long as the group had
nothing to do. When a turn leaves the group without jobs (every rank knows it: the ranks stay
in step), rank 0 pushes a wake-up to each follower's list before it shares its next plan, and
the followers block on their list (BLPOP) until then. A lost wake-up (Redis unreachable)
costs a follower at most WAKE_WAIT_S, never a deadlock: it then joins the collective anyway,
and an idle rank 0 shares a plan at least every IDLE_TURN_S (worker/group/engine.py).
"""

import logging

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

    def wake_followers(self) -> None:
        """Rank 0: the next plan is about to be shared."""
        try:
            pipe = self._redis.pipeline(transaction=False)
            for rank in range(1, self._size):
                key = protocol.group_wake_key(self._group, rank)
                pipe.rpush(key, 1)
                pipe.expire(key, WAKE_TTL_S)
            pipe.execute()
        except redis.RedisError:
            log.warning("could not wake the idle ranks (they join within %d s)", WAKE_WAIT_S)

    def wait(self) -> None:
        """A follower with no jobs: until rank 0 wakes it, or WAKE_WAIT_S."""
        try:
            self._redis.blpop([protocol.group_wake_key(self._group, self._rank)], WAKE_WAIT_S)
        except redis.RedisError:
            log.debug("could not wait for rank 0's wake-up in Redis", exc_info=True)
