"""How a worker's slots are shared between interactive requests and batch lines.

The policy (docs/batches.md): interactive queues are served first at every dequeue, and
lines of batches may hold at most ``batch_slots`` of the worker's slots, so the rest are
always free for interactive requests as they arrive. A batch line never displaces a
running request; it only fills slots nobody else asked for.
"""

import threading


class LaneSlots:
    """Counts the batch lines a worker holds (taken, preparing or running)."""

    def __init__(self, batch_slots: int) -> None:
        self._batch_slots = batch_slots
        self._batch_jobs: set[str] = set()
        self._lock = threading.Lock()  # main thread adds; preparers and the reporter remove

    def batch_has_room(self) -> bool:
        with self._lock:
            return len(self._batch_jobs) < self._batch_slots

    def taken(self, job_id: str, from_batch_lane: bool) -> None:
        if from_batch_lane:
            with self._lock:
                self._batch_jobs.add(job_id)

    def freed(self, job_id: str) -> None:
        with self._lock:
            self._batch_jobs.discard(job_id)

    @property
    def batch_running(self) -> int:
        with self._lock:
            return len(self._batch_jobs)
