"""``worker.engine_thread.ThreadedEngine``: a cancellation that comes after the job's answer
is dropped.

A worker that paused long enough to be declared dead drops its copies when it wakes, and
cancels them in its engine; a copy that had already ended left that cancellation behind, and
when the reaper's retry brought the same job back to this worker, the engine answered it
"The client went away." (a 499 to a client that was still waiting)."""

import threading
import time

from shared.errors import Cancelled
from shared.schemas import ChatMessage, GenerationRequest
from worker.engine_api import EngineOutput, EngineRequest, Failed, Finished
from worker.engine_thread import ThreadedEngine


class OneStepEngine(ThreadedEngine):
    """Answers each job at its next step, unless it was cancelled."""

    model_id = "m"

    def __init__(self) -> None:
        self.outputs: list[EngineOutput] = []
        self.answered = threading.Event()
        super().__init__(self._record, "one-step-engine")

    def _record(self, output: EngineOutput) -> None:
        self.outputs.append(output)
        self.answered.set()

    def prepare(self, job_id, request, timeout_s):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def _run(self) -> None:
        while (arrivals := self._arrivals(wait=True)) is not None:
            cancelled = self._take_cancelled(r.job_id for r in arrivals)
            for request in arrivals:
                if request.job_id in cancelled:
                    self._emit(Failed(request.job_id, Cancelled("The client went away.")))
                else:
                    self._emit(Finished.single(request.job_id, "done", "stop", 1, 1))


def request(job_id: str) -> EngineRequest:
    generation = GenerationRequest(
        request_id=job_id,
        model="m",
        messages=[ChatMessage(role="user", content="hi")],
        deadline=time.time() + 60,
    )
    return EngineRequest(job_id, generation, [[1]], [1], time.monotonic() + 60)


def answer_of(engine: OneStepEngine, job: EngineRequest) -> EngineOutput:
    engine.answered.clear()
    engine.submit(job)
    assert engine.answered.wait(5)
    return engine.outputs[-1]


def test_a_cancel_after_the_job_ended_does_not_stop_it_when_it_comes_back() -> None:
    engine = OneStepEngine()
    engine.start()
    try:
        assert isinstance(answer_of(engine, request("job-1")), Finished)
        engine.cancel("job-1")  # late: the copy already ended (the worker was reaped)
        assert isinstance(answer_of(engine, request("job-1")), Finished)  # the retry runs
    finally:
        engine.stop()


def test_a_cancel_before_the_job_ran_stops_it_and_is_not_kept() -> None:
    engine = OneStepEngine()
    engine.submit(request("job-2"))
    engine.cancel("job-2")  # held (waiting in the inbox): stopped before it runs
    engine.start()
    try:
        assert engine.answered.wait(5)
        (output,) = engine.outputs
        assert isinstance(output, Failed) and isinstance(output.error, Cancelled)
        assert isinstance(answer_of(engine, request("job-2")), Finished)  # sent again: runs
    finally:
        engine.stop()
