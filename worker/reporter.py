"""The reporter thread: turns engine outputs into job events and RQ job results.

It runs beside the engine thread so that Redis round trips never stall a decode step, and
batches whatever outputs are waiting into one pipeline.
"""

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue

from shared.errors import ErrorCode
from shared.schemas import DoneEvent, ErrorEvent, JobEvent, TokenEvent
from worker.engine_api import EngineOutput, Failed, Finished, TokenOutput
from worker.publisher import EventPublisher

log = logging.getLogger(__name__)

_STOP = object()
_MAX_OUTPUTS_PER_PIPELINE = 256


@dataclass
class RunningJob:
    job: Job
    queue: Queue
    execution: Execution
    next_seq: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take_seq(self) -> int:
        with self._lock:
            seq, self.next_seq = self.next_seq, self.next_seq + 1
            return seq


class Reporter:
    def __init__(
        self,
        worker,  # BatchingWorker: finalizes jobs with RQ's own success/failure handling
        publisher: EventPublisher,
        outputs: queue.Queue,
        on_job_done: Callable[[], None],
    ) -> None:
        self._worker = worker
        self._publisher = publisher
        self._outputs = outputs
        self._on_job_done = on_job_done
        self._jobs: dict[str, RunningJob] = {}
        self._thread = threading.Thread(target=self._run, name="mlxq-reporter", daemon=True)

    def track(self, running: RunningJob) -> None:
        self._jobs[running.job.id] = running

    @property
    def running_count(self) -> int:
        return len(self._jobs)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._outputs.put(_STOP)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            outputs = [self._outputs.get()]
            while len(outputs) < _MAX_OUTPUTS_PER_PIPELINE and not self._outputs.empty():
                outputs.append(self._outputs.get_nowait())
            stop = _STOP in outputs
            try:
                self._report([o for o in outputs if o is not _STOP])
            except Exception:
                log.exception("could not report job outputs")
            if stop:
                return

    def _report(self, outputs: list[EngineOutput]) -> None:
        finals: list[tuple[RunningJob, EngineOutput]] = []
        with self._worker.connection.pipeline(transaction=False) as pipeline:
            for output in outputs:
                running = self._jobs.get(output.job_id)
                if running is None:
                    continue
                self._publisher.add(pipeline, output.job_id, _event(output, running.take_seq()))
                if not isinstance(output, TokenOutput):
                    finals.append((running, output))
            pipeline.execute()
        for running, output in finals:
            self._finalize(running, output)

    def _finalize(self, running: RunningJob, output: EngineOutput) -> None:
        job = running.job
        job.ended_at = datetime.now(UTC)
        try:
            if isinstance(output, Finished):
                job._result = _result(output)
                job._status = JobStatus.FINISHED
                self._worker.handle_job_success(
                    job, running.queue, running.queue.started_job_registry, running.execution
                )
            else:
                assert isinstance(output, Failed)
                job._status = JobStatus.FAILED
                exc_string = f"{output.error.code}: {output.error.message}"
                self._worker.handle_job_failure(
                    job, running.queue, exc_string=exc_string, execution=running.execution
                )
        finally:
            del self._jobs[job.id]
            self._on_job_done()


def _event(output: EngineOutput, seq: int) -> JobEvent:
    if isinstance(output, TokenOutput):
        return TokenEvent(seq=seq, text=output.text)
    if isinstance(output, Finished):
        return DoneEvent(seq=seq, **_result(output))
    return ErrorEvent(seq=seq, code=ErrorCode(output.error.code), message=output.error.message)


def _result(output: Finished) -> dict:
    return {
        "text": output.text,
        "finish_reason": output.finish_reason,
        "prompt_tokens": output.prompt_tokens,
        "completion_tokens": output.completion_tokens,
    }
