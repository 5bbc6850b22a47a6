"""The reporter thread: turns engine outputs into job events and RQ job endings.

It runs beside the engine thread so that Redis round trips never stall a decode step, and
batches whatever outputs are waiting into one pipeline. Its ``Outbox`` has a named door for
each producer: the engine thread (``post``, every output of an accepted job), the preparer
threads (``refuse``, a job refused before it reached the engine) and the main thread
(``reaped``, after a pause in which the worker was declared dead).
"""

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue

from shared import protocol
from shared.backoff import Backoff
from shared.errors import ErrorCode, GenerationFailed, MlxqError, RedisUnavailable
from shared.routing import ROUTE_TTL_S, answered_prefix_hashes
from shared.schemas import (
    DoneEvent,
    ErrorEvent,
    GenerationRequest,
    JobEvent,
    JobRequest,
    TokenEvent,
)
from worker.config import WorkerConfig
from worker.engine_api import EngineOutput, Failed, Finished, TokenOutput

log = logging.getLogger(__name__)

MAX_OUTPUTS_PER_PIPELINE = 256
"""Outputs sent in one Redis round trip: enough for a token from every sequence of a batch."""
REDIS_RETRY_S = 120.0
"""How long the reporter keeps retrying a write while Redis is down (a restart with AOF)."""
JOIN_GRACE_S = 30.0
REFUSALS = frozenset(
    {ErrorCode.INVALID_REQUEST, ErrorCode.CONTEXT_LENGTH_EXCEEDED, ErrorCode.TIMEOUT}
)
"""Errors that say what was wrong with a request, not with mlxq: kept briefly."""


@dataclass
class RunningJob:
    """A job this worker accepted: RQ's records of it and its next event number."""

    job: Job
    queue: Queue
    execution: Execution | None
    request: JobRequest | None = None
    """The job's request, once read (None for a job refused before it could be read)."""
    next_seq: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take_seq(self) -> int:
        """Called from a preparer thread (``started``) and the reporter thread (the rest)."""
        with self._lock:
            seq, self.next_seq = self.next_seq, self.next_seq + 1
            return seq


class JobEnder(Protocol):
    """What the reporter needs from the worker: RQ's three ways to end a job."""

    def end_finished(self, job: Job, queue: Queue, execution: Execution, result: dict) -> None: ...

    def end_failed(
        self, job: Job, queue: Queue, execution: Execution, why: str, keep_s: int | None = None
    ) -> None: ...

    def end_cancelled(self, job: Job, queue: Queue, execution: Execution, keep_s: int) -> None: ...


class _Stop:
    """Posted last, by ``Reporter.stop``."""


class _Reaped:
    """Posted by the main thread when the reaper declared this worker dead during a pause."""


OutboxItem = EngineOutput | _Stop | _Reaped


class Outbox:
    """The reporter's inbox. Two producers, each through its own door (see module doc)."""

    def __init__(self) -> None:
        self._items: queue.Queue[OutboxItem] = queue.Queue()

    def post(self, output: EngineOutput) -> None:
        """The engine thread: an output of a job it accepted."""
        self._items.put(output)

    def refuse(self, job_id: str, error: MlxqError) -> None:
        """A preparer thread: a job that ends before reaching the engine."""
        self._items.put(Failed(job_id, error))

    def reaped(self) -> None:
        """The main thread: the worker was declared dead while it paused; its running jobs
        went to other workers (or failed), so it must drop them all."""
        self._items.put(_Reaped())

    def _close(self) -> None:
        self._items.put(_Stop())

    def _take(self, most: int) -> list[OutboxItem]:
        """Block for one item, then take whatever else is waiting, up to ``most``."""
        items = [self._items.get()]
        while len(items) < most:
            try:
                items.append(self._items.get_nowait())
            except queue.Empty:
                break
        return items


class Reporter:
    def __init__(
        self,
        connection: redis.Redis,
        worker_name: str,
        ender: JobEnder,
        on_job_done: Callable[[str], None],
        on_abandon: Callable[[str], None],
        *,
        outbox: Outbox,
        config: WorkerConfig,
        claims_prefixes: bool,
    ) -> None:
        """``claims_prefixes``: the engine keeps a prefix cache, so the conversations this
        worker answers are routed back to it (shared/routing.py)."""
        self.outbox = outbox
        self._connection = connection
        self._worker_name = worker_name
        self._ender = ender
        self._on_job_done = on_job_done
        self._on_abandon = on_abandon
        self._event_ttl_s = config.event_ttl_s
        self._log_content = config.log_content
        self._claims_prefixes = claims_prefixes
        self._refused_ttl_s = config.refused_ttl_s
        self._jobs: dict[str, RunningJob] = {}
        self._thread = threading.Thread(target=self._run, name="mlxq-reporter", daemon=True)

    def track(self, running: RunningJob) -> None:
        """A preparer thread: from now on the job's outputs are reported, and it counts as
        running."""
        self._jobs[running.job.id] = running

    def is_running(self, job_id: str) -> bool:
        return job_id in self._jobs

    def running_jobs(self) -> list[RunningJob]:
        """A snapshot, for the main thread (dict.copy is one step under the GIL)."""
        return list(self._jobs.copy().values())

    @property
    def running_count(self) -> int:
        return len(self._jobs)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.outbox._close()
        self._thread.join(timeout=REDIS_RETRY_S + JOIN_GRACE_S)

    def _run(self) -> None:
        while True:
            items = self.outbox._take(MAX_OUTPUTS_PER_PIPELINE)
            if any(isinstance(item, _Reaped) for item in items):
                for job_id in list(self._jobs):
                    self._abandon(job_id)
            outputs = [item for item in items if not isinstance(item, _Stop | _Reaped)]
            try:
                self._report(outputs)
            except Exception:
                log.exception("could not report job outputs")
            if any(isinstance(item, _Stop) for item in items):
                return

    def _report(self, outputs: list[EngineOutput]) -> None:
        events: list[tuple[str, JobEvent]] = []
        finals: list[tuple[RunningJob, Finished | Failed]] = []
        first_seq: dict[str, int] = {}  # per job, the first event number in this batch
        for output in outputs:
            running = self._jobs.get(output.job_id)
            if running is None:
                continue
            seq = running.take_seq()
            first_seq.setdefault(output.job_id, seq)
            events.append((output.job_id, _event(output, seq, self._worker_name)))
            if not isinstance(output, TokenOutput):
                finals.append((running, output))

        abandoned: set[str] = set()

        def publish() -> None:
            nonlocal abandoned
            abandoned = protocol.publish_if_running(
                self._connection, self._worker_name, events, self._event_ttl_s
            )
            claims = [(r, o) for r, o in finals if r.job.id not in abandoned]
            if self._claims_prefixes and claims:
                with self._connection.pipeline(transaction=False) as pipeline:
                    for running, output in claims:
                        self._claim(pipeline, running, output)
                    pipeline.execute()

        try:
            _retrying(publish)
        except Exception as exc:  # not Redis: an output it cannot carry (never skip ending)
            log.exception("could not send job events")
            finals = [(r, self._undeliverable(r, exc, first_seq[r.job.id])) for r, _ in finals]
        for job_id in abandoned:
            self._abandon(job_id)
        for running, output in finals:
            if running.job.id in abandoned:
                continue
            try:
                _retrying(lambda: self._end(running, output))  # noqa: B023 (called at once)
            except Exception:  # e.g. Redis full: RQ's record of the job is left as it is
                log.exception("job %s: could not end it in RQ", running.job.id)
            finally:
                del self._jobs[running.job.id]
                self._on_job_done(running.job.id)

    def _abandon(self, job_id: str) -> None:
        """The worker no longer runs this job (the reaper retried or failed it while the
        worker paused): stop it and free its slot, publishing nothing and ending nothing."""
        if self._jobs.pop(job_id, None) is None:
            return
        log.warning("job %s: given to another worker while this one paused; dropped", job_id)
        self._on_abandon(job_id)
        self._on_job_done(job_id)

    def _claim(self, pipeline: Any, running: RunningJob, output: Finished | Failed) -> None:
        """This worker now holds the answered conversation's KV: route its next turn here."""
        if not self._claims_prefixes or not isinstance(running.request, GenerationRequest):
            return
        if isinstance(output, Finished) and len(output.choices) == 1:
            hashes = answered_prefix_hashes(running.request, output.choices[0].text)
            protocol.add_prefix_claims(pipeline, self._worker_name, hashes, ROUTE_TTL_S)

    def _undeliverable(self, running: RunningJob, exc: Exception, seq: int) -> Failed:
        """Fail a job whose answer could not be sent, and tell its client so if possible. The
        error takes the number of the first event that was lost, which the client waits for."""
        error: MlxqError = GenerationFailed(f"The answer could not be sent: {type(exc).__name__}")
        if isinstance(exc, redis.exceptions.OutOfMemoryError):
            error = RedisUnavailable("Redis is full (maxmemory): the answer could not be kept.")
        event = ErrorEvent(seq=seq, code=error.code, message=error.message)
        try:
            with self._connection.pipeline(transaction=False) as pipeline:
                protocol.add_event(pipeline, running.job.id, event, self._event_ttl_s)
                protocol.remove_running_job(pipeline, self._worker_name, running.job.id)
                pipeline.execute()
        except Exception:
            try:  # a full Redis still carries pub/sub: the client hears why, at once
                protocol.tell_waiter(self._connection, running.job.id, event)
            except Exception:
                log.exception("job %s: could not report its failure either", running.job.id)
        return Failed(running.job.id, error)

    def _end(self, running: RunningJob, output: Finished | Failed) -> None:
        """End the job in RQ: its result, registries and the worker's statistics."""
        job, job_queue, execution = running.job, running.queue, running.execution
        assert execution is not None, "tracked only after its start was recorded"
        if isinstance(output, Finished):
            if self._log_content:
                log.info("job %s: answer %r", job.id, [c.text for c in output.choices])
            self._ender.end_finished(job, job_queue, execution, _result(output))
        elif output.error.code == ErrorCode.CANCELLED:
            self._ender.end_cancelled(job, job_queue, execution, self._refused_ttl_s)
        else:
            why = f"{output.error.code}: {output.error.message}"
            refused = output.error.code in REFUSALS
            keep_s = self._refused_ttl_s if refused else None
            self._ender.end_failed(job, job_queue, execution, why, keep_s)


def _retrying(write: Callable[[], None]) -> None:
    """Run a Redis write, waiting out a Redis restart (up to REDIS_RETRY_S) so that no
    answer is lost to a short outage."""
    backoff = Backoff(first_s=0.2, cap_s=5.0)
    waited = 0.0
    while True:
        try:
            write()
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if waited > REDIS_RETRY_S:
                log.error("giving up on a Redis write after %ss: %s", REDIS_RETRY_S, exc)
                return
            log.warning("Redis unreachable (%s); retrying", exc)
            waited += backoff.sleep()


def _event(output: EngineOutput, seq: int, worker: str) -> JobEvent:
    if isinstance(output, TokenOutput):
        return TokenEvent(
            seq=seq,
            text=output.text,
            index=output.index,
            channel=output.channel,
            logprobs=output.logprobs,
            tool_calls=output.tool_calls,
            prompt_logprobs=output.prompt_logprobs,
        )
    if isinstance(output, Finished):
        return DoneEvent(seq=seq, worker=worker, **_result(output))
    error = output.error
    return ErrorEvent(
        seq=seq, code=ErrorCode(error.code), message=error.message, partial_text=error.partial
    )


def _result(output: Finished) -> dict:
    """The job's answer: its DoneEvent's fields, and RQ's result of the job."""
    return {
        "choices": [choice.model_dump(mode="json") for choice in output.choices],
        "prompt_tokens": output.prompt_tokens,
        "cached_tokens": output.cached_tokens,
        **({"embeddings": output.embeddings} if output.embeddings is not None else {}),
        **({"tokenized": output.tokenized.model_dump()} if output.tokenized is not None else {}),
        **(
            {"speculation": output.speculation.model_dump()}
            if output.speculation is not None
            else {}
        ),
        **{
            name: value
            for name, value in (
                ("first_token_s", output.first_token_s),
                ("last_token_s", output.last_token_s),
            )
            if value is not None
        },
    }
