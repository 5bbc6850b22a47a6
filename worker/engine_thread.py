"""The plumbing every engine with a thread of its own shares: its inbox, its cancel set, and
starting and stopping its thread.

Work reaches an engine thread through two doors: a preparer thread submits a request
(``submit``: the inbox, a queue only the engine thread reads), and any thread may ``cancel``
a job (a set under a lock, read by the engine thread between steps: the cancel listener, the
heartbeat for a job whose API process is gone, a preparer for a cancel held while the job
started, the reporter for a job given to another worker). ``stop`` puts a stop marker in the
inbox, behind whatever was submitted before it.

A subclass writes ``_run``, the engine thread's body: it takes new requests with
``_arrivals`` and cancellations with ``_take_cancelled`` until ``_arrivals`` says stop.
"""

import queue
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from shared.errors import GenerationFailed
from worker.engine_api import Emit, Engine, EngineOutput, EngineRequest, Failed, TokenOutput

ENGINE_JOIN_S = 30.0
"""How long ``stop`` waits for the engine thread to fail what it still holds and exit."""
SHUT_DOWN_MESSAGE = "The worker shut down before the answer was complete."
ENDED_KEPT = 4096
"""Answered jobs remembered, so that a late cancellation for one of them is dropped."""


class _Stop:
    """Put in the inbox by ``stop``: the engine thread ends after it."""


class ThreadedEngine(Engine):
    def __init__(self, emit: Emit, thread_name: str) -> None:
        self._emit_output = emit
        self._inbox: queue.Queue[EngineRequest[Any] | _Stop] = queue.Queue()
        self._holding: set[str] = set()
        """Jobs submitted and not yet answered."""
        self._ended: OrderedDict[str, None] = OrderedDict()
        """Jobs this engine answered lately: a cancellation for one of them is too late."""
        self._cancelled: set[str] = set()
        self._cancel_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    # -- called from the RQ side -------------------------------------------------------------

    def submit(self, request: EngineRequest[Any]) -> None:
        with self._cancel_lock:
            self._holding.add(request.job_id)
            self._ended.pop(request.job_id, None)  # a new attempt of a job seen before
        self._inbox.put(request)

    def cancel(self, job_id: str) -> None:
        """Stop working for a job; the engine thread sees it before its next step. A job the
        engine has already answered is left alone: the same job may come back to this worker
        later (the reaper gave it to another worker while this one paused, and it was put
        back in the queue), and a cancellation kept from before would stop it."""
        with self._cancel_lock:
            if job_id not in self._ended:
                self._cancelled.add(job_id)

    def holds(self, job_id: str) -> bool:
        with self._cancel_lock:
            return job_id in self._holding

    def _emit(self, output: EngineOutput) -> None:
        """Hand an output to the reporter; a job's last one ends what the engine holds of it."""
        if not isinstance(output, TokenOutput):
            with self._cancel_lock:
                self._holding.discard(output.job_id)
                self._cancelled.discard(output.job_id)
                self._ended[output.job_id] = None
                if len(self._ended) > ENDED_KEPT:
                    self._ended.popitem(last=False)
        self._emit_output(output)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._inbox.put(_Stop())
        self._thread.join(timeout=ENGINE_JOIN_S)

    # -- the engine thread -------------------------------------------------------------------

    def _run(self) -> None:
        """The engine thread's body (a subclass writes it)."""
        raise NotImplementedError

    def _arrivals(
        self, wait: bool, timeout: float | None = None
    ) -> list[EngineRequest[Any]] | None:
        """Every request waiting in the inbox, blocking for the first one when ``wait`` (at
        most ``timeout`` seconds); None once ``stop`` was called. A request submitted before
        the stop but not taken yet is failed here: nothing will run it."""
        arrivals: list[EngineRequest[Any]] = []
        try:
            item = self._inbox.get(block=wait, timeout=timeout)
            while True:
                if isinstance(item, _Stop):
                    for request in arrivals:
                        self._emit(Failed(request.job_id, GenerationFailed(SHUT_DOWN_MESSAGE)))
                    return None
                arrivals.append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            return arrivals

    def _take_cancelled(self, job_ids: Iterable[str] | None = None) -> set[str]:
        """The cancellations asked for these jobs (for any job when None), each taken once."""
        with self._cancel_lock:
            found = set(self._cancelled) if job_ids is None else self._cancelled & set(job_ids)
            self._cancelled -= found
            return found
