"""How a worker's slots are shared between interactive requests and batch lines.

The policy (docs/batches.md):

- every batch has a lane of its own beside the model's queue; the lanes are served in turn
  (round robin), so a batch created after a large one does not wait behind it;
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

from rq.queue import Queue

from shared.keys import batch_lanes_prefix
from shared.rq_bridge import queue_names

LANES_REFRESH_S = 1.0
"""How often a worker looks for new batches' lanes (a batch starts within this)."""
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


class BatchLanes:
    """The batches' lanes of one model's queue, as RQ lists its queues, each turn starting
    with the next one: a batch's lines never wait behind another batch's. The main thread's
    own (it dequeues)."""

    def __init__(self, shared_queue: Queue, clock: Callable[[], float] = time.monotonic) -> None:
        self._shared = shared_queue
        self._prefix = batch_lanes_prefix(shared_queue.name)
        self._clock = clock
        self._lanes: list[Queue] = []
        self._looked_at = float("-inf")
        self._turn = 0

    def in_turn(self) -> list[Queue]:
        """Every lane, the next one first (a Redis call at most once per LANES_REFRESH_S)."""
        if self._clock() - self._looked_at >= LANES_REFRESH_S:
            self._looked_at = self._clock()
            self._refresh()
        if not self._lanes:
            return []
        self._turn = (self._turn + 1) % len(self._lanes)
        return self._lanes[self._turn :] + self._lanes[: self._turn]

    def _refresh(self) -> None:
        names = [n for n in queue_names(self._shared.connection) if n.startswith(self._prefix)]
        known = {lane.name: lane for lane in self._lanes}
        self._lanes = [
            known.get(name)
            or Queue(name, connection=self._shared.connection, serializer=self._shared.serializer)
            for name in names
        ]
