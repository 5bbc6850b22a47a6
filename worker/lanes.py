"""How a worker's slots are shared between interactive requests and batch lines.

The policy (docs/batches.md):

- interactive queues are served first at every dequeue;
- while the worker is quiet (no interactive request running or ended in the last
  ``quiet_s`` seconds), batch lines may hold up to ``batch_slots`` slots: they use idle
  capacity, and the other slots stay free for interactive requests as they arrive;
- while interactive requests come, new batch lines start only into one slot (so batches
  never starve), and the lines already running finish: on a CPU or a small GPU every
  sequence in a decode step slows the others, so fewer batch sequences means faster
  interactive tokens.

A running batch line is never preempted.
"""

import threading
import time
from collections.abc import Callable

QUIET_S = 2.0
"""How long after the last interactive request the batch lines get their full share back."""
BATCH_SLOTS_WHILE_BUSY = 1


class LaneSlots:
    """Counts the batch lines and interactive jobs a worker holds (taken, preparing or
    running), and says whether another batch line may start."""

    def __init__(
        self,
        batch_slots: int,
        quiet_s: float = QUIET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._batch_slots = batch_slots
        self._quiet_s = quiet_s
        self._clock = clock
        self._batch_jobs: set[str] = set()
        self._interactive_jobs: set[str] = set()
        self._last_interactive = float("-inf")
        self._lock = threading.Lock()  # main thread adds; preparers and the reporter remove

    def batch_has_room(self) -> bool:
        with self._lock:
            busy = bool(self._interactive_jobs) or (
                self._clock() - self._last_interactive < self._quiet_s
            )
            limit = min(self._batch_slots, BATCH_SLOTS_WHILE_BUSY) if busy else self._batch_slots
            return len(self._batch_jobs) < limit

    def taken(self, job_id: str, from_batch_lane: bool) -> None:
        with self._lock:
            if from_batch_lane:
                self._batch_jobs.add(job_id)
            else:
                self._interactive_jobs.add(job_id)
                self._last_interactive = self._clock()

    def freed(self, job_id: str) -> None:
        with self._lock:
            self._batch_jobs.discard(job_id)
            if job_id in self._interactive_jobs:
                self._interactive_jobs.discard(job_id)
                self._last_interactive = self._clock()

    @property
    def batch_running(self) -> int:
        with self._lock:
            return len(self._batch_jobs)
