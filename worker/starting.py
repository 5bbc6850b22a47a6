"""Cancellations that arrive while a job is starting.

A worker learns that a job's client left in two ways: the cancel key, checked in the round
trip that records the job's start, and the cancel channel, which reaches the jobs it counts
as running. Between the two there is a gap: the API's cancel can land in Redis just after
the check, and its message reach the worker before the job counts as running (the reply of
that round trip is still on its way). Such a message found no running job and was dropped,
and the job then ran to its end.

So a job is registered here before its cancel check, and stays registered until the engine
has it: a cancellation for it meanwhile is held, then applied (``engine.cancel``) once the
engine can stop it. Any cancel published after the check finds the job here or running.
"""

import threading


class StartingJobs:
    """Jobs between their cancel check and ``engine.submit``, and whether a cancellation
    arrived for each meanwhile. Shared by the preparer threads and the cancel listener."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled: dict[str, bool] = {}

    def begin(self, job_id: str) -> None:
        """Before the job's cancel check."""
        with self._lock:
            self._cancelled[job_id] = False

    def hold_cancel(self, job_id: str) -> bool:
        """The cancel listener: True when the job is starting (the cancellation is held for
        ``end``); False when it is not, and the caller cancels it as usual if it runs."""
        with self._lock:
            if job_id not in self._cancelled:
                return False
            self._cancelled[job_id] = True
            return True

    def end(self, job_id: str) -> bool:
        """Once the engine has the job (or it was refused): whether a cancellation arrived."""
        with self._lock:
            return self._cancelled.pop(job_id, False)
