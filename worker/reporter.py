"""The reporter thread: turns engine outputs into job events and RQ job results.

It runs beside the engine thread so that Redis round trips never stall a decode step, and
batches whatever outputs are waiting into one pipeline.
"""

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue

from shared import keys
from shared.errors import ErrorCode, GenerationFailed
from shared.schemas import DoneEvent, ErrorEvent, JobEvent, TokenEvent
from worker.engine_api import EngineOutput, Failed, Finished, TokenOutput
from worker.publisher import EventPublisher

log = logging.getLogger(__name__)

_STOP = object()
_MAX_OUTPUTS_PER_PIPELINE = 256
REDIS_RETRY_S = 120.0
"""How long the reporter keeps retrying a write while Redis is down."""


@dataclass
class RunningJob:
    job: Job
    queue: Queue
    execution: Execution | None
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
        log_content: bool = False,
    ) -> None:
        self._worker = worker
        self._publisher = publisher
        self._outputs = outputs
        self._on_job_done = on_job_done
        self._log_content = log_content
        self._jobs: dict[str, RunningJob] = {}
        self._thread = threading.Thread(target=self._run, name="mlxq-reporter", daemon=True)

    def track(self, running: RunningJob) -> None:
        self._jobs[running.job.id] = running

    def is_running(self, job_id: str) -> bool:
        return job_id in self._jobs

    @property
    def running_count(self) -> int:
        return len(self._jobs)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._outputs.put(_STOP)
        self._thread.join(timeout=REDIS_RETRY_S + 30)

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
        events: list[tuple[str, JobEvent]] = []
        finals: list[tuple[RunningJob, EngineOutput]] = []
        for output in outputs:
            running = self._jobs.get(output.job_id)
            if running is None:
                continue
            events.append((output.job_id, _event(output, running.take_seq())))
            if not isinstance(output, TokenOutput):
                finals.append((running, output))

        def publish() -> None:
            with self._worker.connection.pipeline(transaction=False) as pipeline:
                for job_id, event in events:
                    self._publisher.add(pipeline, job_id, event)
                for running, _ in finals:
                    pipeline.srem(keys.worker_jobs_key(self._worker.name), running.job.id)
                pipeline.execute()

        try:
            _retrying(publish)
        except Exception as exc:  # not Redis: an output it cannot carry (never skip finalizing)
            log.exception("could not send job events")
            finals = [(r, self._undeliverable(r, o, exc)) for r, o in finals]
        for running, output in finals:
            try:
                _retrying(lambda: self._finalize(running, output))  # noqa: B023 (called at once)
            finally:
                del self._jobs[running.job.id]
                self._on_job_done()

    def _undeliverable(self, running: RunningJob, output: EngineOutput, exc: Exception) -> Failed:
        """Fail a job whose answer could not be sent, and tell its client so if possible."""
        error = GenerationFailed(f"The answer could not be sent: {type(exc).__name__}")
        try:
            event = ErrorEvent(seq=running.take_seq(), code=error.code, message=error.message)
            self._publisher.publish(running.job.id, event)
            self._worker.connection.srem(keys.worker_jobs_key(self._worker.name), running.job.id)
        except Exception:
            log.exception("job %s: could not report its failure either", running.job.id)
        return Failed(output.job_id, error)

    def _finalize(self, running: RunningJob, output: EngineOutput) -> None:
        """End the job in RQ: its result, registries and the worker's statistics."""
        job = running.job
        job.ended_at = datetime.now(UTC)
        if isinstance(output, Finished):
            if self._log_content:
                log.info("job %s: answer %r", job.id, output.text)
            job._result = _result(output)
            job._status = JobStatus.FINISHED
            self._worker.handle_job_success(
                job, running.queue, running.queue.started_job_registry, running.execution
            )
        elif output.error.code == ErrorCode.CANCELLED:
            self._record_cancelled(running)
        else:
            assert isinstance(output, Failed)
            job._status = JobStatus.FAILED
            exc_string = f"{output.error.code}: {output.error.message}"
            self._worker.handle_job_failure(
                job, running.queue, exc_string=exc_string, execution=running.execution
            )

    def _record_cancelled(self, running: RunningJob) -> None:
        """A job whose client went away is RQ's "canceled", not "failed": it did not break."""
        job = running.job
        with self._worker.connection.pipeline() as pipeline:
            job.set_status(JobStatus.CANCELED, pipeline=pipeline)
            running.queue.canceled_job_registry.add(
                job, ttl=job.failure_ttl or 0, pipeline=pipeline
            )
            self._worker.cleanup_execution(job, pipeline=pipeline, execution=running.execution)
            pipeline.expire(job.key, job.failure_ttl or 600)
            pipeline.execute()


def _retrying(write: Callable[[], None]) -> None:
    """Run a Redis write, waiting out a Redis restart (up to REDIS_RETRY_S) so that no
    answer is lost to a short outage."""
    give_up_at = time.monotonic() + REDIS_RETRY_S
    backoff = 0.2
    while True:
        try:
            write()
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() > give_up_at:
                log.error("giving up on a Redis write after %ss: %s", REDIS_RETRY_S, exc)
                return
            log.warning("Redis unreachable (%s); retrying in %.1fs", exc, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


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
