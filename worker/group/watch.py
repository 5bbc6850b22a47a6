"""How the ranks of a group watch each other, outside the model's collectives (a rank blocked
in one cannot tell a slow peer from a dead one).

Each rank, on a thread of its own, counts up its beat in Redis every second and reads the
others'. A rank whose counter has not moved for MLXQ_GROUP_TIMEOUT_S (by the watcher's own
clock), or a line in the group's ``ended`` key, ends this rank: it prints one line and exits
at once, whatever its other threads are blocked in. Rank 0's exit closes its Redis
connections, so the fleet sees a lost worker and retries its jobs (as for any worker killed).
"""

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from shared import protocol

log = logging.getLogger(__name__)

BEAT_S = 1.0
ENDED_TTL_S = 3600
"""The ``ended`` line outlives the group long enough to be read by every rank."""
GROUP_LOST_EXIT = 3


class RankWatch:
    def __init__(
        self,
        connection: redis.Redis,
        group: str,
        rank: int,
        size: int,
        timeout_s: float,
        end: Callable[[str], None] | None = None,
    ) -> None:
        self._redis = connection
        self._group = group
        self._rank = rank
        self._size = size
        self._timeout_s = timeout_s
        self._end = end or self._exit
        self._parent = os.getppid()
        self._seen: dict[int, tuple[int | None, float]] = {}
        """Each other rank: its last counter read, and when it last moved (our clock)."""
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="group-watch", daemon=True)

    def start(self) -> None:
        self._beat()
        now = time.monotonic()
        self._seen = {r: (None, now) for r in range(self._size) if r != self._rank}
        self._thread.start()

    def stop(self) -> None:
        """Stop beating (a clean end: rank 0 told the others to stop)."""
        self._stopped.set()

    def record_end(self, why: str) -> None:
        """Record why this group ends, for the other ranks to print (the first line stays)."""
        self._stopped.set()
        try:
            self._redis.set(protocol.group_ended_key(self._group), why, ex=ENDED_TTL_S, nx=True)
        except redis.RedisError:
            log.debug("could not record why the group ended", exc_info=True)

    def end_group(self, why: str) -> None:
        """Record why this group ends, then end this rank at once."""
        self.record_end(why)
        self._end(why)

    def _run(self) -> None:
        while not self._stopped.wait(BEAT_S):
            try:
                self._beat()
                why = self._lost()
            except redis.RedisError as exc:
                log.warning("group watch: Redis: %s", exc)
                continue
            if why is not None and not self._stopped.is_set():
                self._end(why)
                return

    def _beat(self) -> None:
        key = protocol.group_beat_key(self._group, self._rank)
        pipe = self._redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, int(self._timeout_s * 10) + 60)
        pipe.execute()

    def _lost(self) -> str | None:
        """Why the group must end now (None: every rank beats)."""
        if os.getppid() != self._parent:
            return "the launcher that started this group is gone; the group ends"
        ended: Any = self._redis.get(protocol.group_ended_key(self._group))
        if ended is not None:
            return str(ended.decode(errors="replace"))
        others = sorted(self._seen)
        counts = self._redis.mget([protocol.group_beat_key(self._group, r) for r in others])
        now = time.monotonic()
        for rank, raw in zip(others, counts, strict=True):
            count = None if raw is None else int(raw)
            last, moved_at = self._seen[rank]
            if count != last:
                self._seen[rank] = (count, now)
            elif now - moved_at > self._timeout_s:
                silent = "never beat" if count is None else "stopped beating"
                return (
                    f"rank {rank} of worker group {self._group} {silent} for "
                    f"{now - moved_at:.0f} s (killed, stopped or asleep); the group ends"
                )
        return None

    def _exit(self, why: str) -> None:
        print(f"mlxq worker (rank {self._rank}): {why}", file=sys.stderr, flush=True)
        logging.shutdown()
        os._exit(GROUP_LOST_EXIT)
