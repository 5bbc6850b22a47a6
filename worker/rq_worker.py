"""An RQ worker that runs many jobs at once in one process, through a batching engine.

RQ has no public way to run several jobs concurrently in one process, so this worker keeps
RQ's bookkeeping (registration, heartbeats, executions, registries, results; reached through
shared/rq_bridge.py) but replaces its one-job-at-a-time loop. Three threads, each owning its
state (see docs/architecture.md for the table):

- the **main thread** (``work``) heartbeats, takes a job whenever a batch slot is free,
  records its start in RQ and hands it to the engine (``engine.submit``), or refuses it
  (``reporter.outbox.refuse``);
- the **engine thread** (worker/mlx_engine.py) generates and posts outputs to the
  reporter's outbox;
- the **reporter thread** (worker/reporter.py) publishes events and ends jobs in RQ, then
  frees the job's slot (``_job_done``).

A pub/sub thread of redis-py's (``_listen_for_cancellations``) only forwards cancellations
to ``engine.cancel`` (or holds them for a job still starting: worker/starting.py). The
worker never forks, so a loaded MLX model is safe.
"""

import collections
import contextlib
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from rq.job import Job
from rq.queue import Queue

from shared import history, protocol
from shared.backoff import Backoff
from shared.errors import (
    Cancelled,
    ErrorCode,
    GenerationFailed,
    InvalidRequest,
    JobTimedOut,
    MlxqError,
)
from shared.job_functions import (
    ALLOWED_FUNCTIONS,
    UnreadableJob,
    is_mlxq_job,
    read_job_request,
)
from shared.keys import batch_lane_name, is_batch_lane, worker_queue_name
from shared.rq_bridge import ConcurrentWorkerBase, release_queue
from shared.schemas import ErrorEvent, JobRequest, StartedEvent
from worker.engine_api import Engine, EngineRequest, PrefixCacheReport
from worker.lanes import LaneSlots
from worker.reporter import Outbox, Reporter, RunningJob
from worker.starting import StartingJobs

log = logging.getLogger(__name__)

DEQUEUE_TIMEOUT_S = 1
"""How long one blocking dequeue waits: bounds how late a stop request is noticed."""
TOKEN_RATE_WINDOW_S = 10.0
"""Window over which the worker's reported tokens/s is averaged."""
PREPARERS = 2
"""Threads that read, check and tokenize taken jobs; two, so one long prompt never holds up
the next job (and prompts are tokenized in parallel where the tokenizer releases the GIL)."""
DRAIN_POLL_S = 0.05
"""While draining, how often the worker looks whether its last jobs have ended."""
IDLE_POLL_S = 1.0
"""While suspended (``rq suspend``), how often the worker looks again."""


class BatchingWorker(ConcurrentWorkerBase):
    def __init__(
        self,
        queues: list[Queue],
        *,
        engine: Engine,
        outbox: Outbox,
        concurrency: int,
        event_ttl_s: int,
        job_timeout_s: int,
        drain_timeout_s: float,
        refused_ttl_s: int = 300,
        log_content: bool = False,
        batch_slots: int = 1,
        **kwargs: Any,
    ) -> None:
        """``queues``: the model's shared queue. The worker also serves its own queue (first)
        and the model's batch lane (last, into at most ``batch_slots`` slots)."""
        shared_queue = queues[0]
        self.batch_lane = Queue(
            batch_lane_name(shared_queue.name),
            connection=shared_queue.connection,
            serializer=shared_queue.serializer,
        )
        super().__init__([*queues, self.batch_lane], **kwargs)
        self.own_queue = Queue(
            worker_queue_name(shared_queue.name, self.name),
            connection=self.connection,
            serializer=shared_queue.serializer,
        )
        self.serve_first(self.own_queue)  # requests routed here reuse this worker's cache
        self.lanes = LaneSlots(batch_slots)
        self.engine = engine
        self._slots = threading.Semaphore(concurrency)
        self._preparers = ThreadPoolExecutor(PREPARERS, thread_name_prefix="mlxq-prepare")
        self._preparing = 0
        self._preparing_lock = threading.Lock()
        self._state_lock = threading.Lock()
        """Held while the running count and RQ's worker state change together."""
        self._concurrency = concurrency
        self._event_ttl_s = event_ttl_s
        self._job_timeout_s = job_timeout_s
        self._drain_timeout_s = drain_timeout_s
        self._refused_ttl_s = refused_ttl_s
        self._log_content = log_content
        self.reporter = Reporter(
            self.connection,
            self.name,
            self,
            self._job_done,
            engine.cancel,
            outbox=outbox,
            event_ttl_s=event_ttl_s,
            log_content=log_content,
            claims_prefixes=hasattr(engine, "prefix_cache_report"),
            refused_ttl_s=refused_ttl_s,
        )
        self._last_heartbeat = 0.0
        self._suspended = False
        self._missing_since: dict[str, float] = {}
        self._token_samples: collections.deque[tuple[float, int]] = collections.deque()
        self._backoff = Backoff(first_s=0.5, cap_s=10.0)
        self._cancel_listener: Any = None
        self._starting = StartingJobs()

    # -- the loop --------------------------------------------------------------------------

    def work(self, burst: bool = False, logging_level: str | None = None, **_: Any) -> bool:  # type: ignore[override]  # RQ's other options do not apply
        self.bootstrap(logging_level or "INFO")
        self.install_signal_handlers()
        self.engine.start()
        self.reporter.start()
        self._listen_for_cancellations()
        worked = False
        try:
            while not self.stop_requested:
                self._keep_alive()
                if self._suspended:
                    if burst:
                        break
                    time.sleep(IDLE_POLL_S)
                    continue
                if not self._slots.acquire(timeout=DEQUEUE_TIMEOUT_S):
                    continue
                dequeued = self._dequeue()
                if dequeued is None:
                    self._slots.release()
                    if burst and self.reporter.running_count == 0:
                        break
                    continue
                if self.stop_requested:
                    self._give_back(*dequeued)
                    break
                self._start_job(*dequeued)
                worked = True
        finally:
            self._drain()
            self.engine.stop()
            self.reporter.stop()
            if self._cancel_listener is not None:
                self._cancel_listener.stop()
            self._deregister()
            self.teardown()
        return worked

    def on_stop_signal(self) -> None:
        log.info("worker %s: stopping; finishing %d job(s)", self.name, self.reporter.running_count)

    def _keep_alive(self) -> None:
        if time.monotonic() - self._last_heartbeat < protocol.HEARTBEAT_INTERVAL_S:
            return
        self._last_heartbeat = time.monotonic()
        try:
            # The beat rewrites the running set from this worker's own list: under the state
            # lock, so that no job starts (on a preparer thread) between the two.
            with self._state_lock, self.connection.pipeline() as pipeline:
                running = [r.job.id for r in self.reporter.running_jobs()]
                stats = self._stats()
                protocol.add_heartbeat(pipeline, self.name, stats, self.worker_ttl, running)
                history.add_worker_sample(pipeline, self.name, stats, time.time())
                self.heartbeat(pipeline=pipeline)
                reaped = pipeline.execute()[0]
            if reaped:
                self._rejoin()
            self._stop_orphans()
            self._note_suspension(self.is_suspended())
            if self.should_run_maintenance_tasks:
                self.run_maintenance_tasks()
        except redis.RedisError as exc:  # unreachable, or full (maxmemory): beat again later
            log.warning("worker %s: heartbeat failed (%s)", self.name, exc)

    def _stop_orphans(self) -> None:
        """Stop the jobs whose API process is gone (it crashed or was killed): nobody waits
        for their answers. A waiter must be missing for WAITER_GRACE_S first, since a Redis
        restart loses the API processes' beats for a moment."""
        by_waiter: dict[str, list[str]] = {}
        for running in self.reporter.running_jobs():
            if running.request is not None and running.request.waiter:
                by_waiter.setdefault(running.request.waiter, []).append(running.job.id)
        now = time.monotonic()
        missing = protocol.missing_waiters(self.connection, set(by_waiter))
        self._missing_since = {w: self._missing_since.get(w, now) for w in missing}
        for waiter, since in self._missing_since.items():
            if now - since >= protocol.WAITER_GRACE_S:
                for job_id in by_waiter[waiter]:
                    log.info("job %s: its API process is gone; stopping it", job_id)
                    self.engine.cancel(job_id)

    def _rejoin(self) -> None:
        """This worker paused (a sleeping Mac, a stopped VM) long enough to be declared dead:
        its jobs went to other workers or failed. Drop them all without a word, and register
        again with RQ, which forgot it; every slot is free again once they are dropped."""
        log.warning(
            "worker %s: declared dead during a pause; dropping its jobs, rejoining", self.name
        )
        self.reporter.outbox.reaped()
        self.rejoin()
        self.show_state(suspended=self._suspended, running=0)

    def _note_suspension(self, suspended: bool) -> None:
        if suspended == self._suspended:
            return
        log.info(
            "worker %s: %s",
            self.name,
            "suspended (rq suspend): taking no new job" if suspended else "resumed",
        )
        with self._state_lock:
            self._suspended = suspended
            self.show_state(suspended=suspended, running=self.reporter.running_count)

    def _stats(self) -> protocol.WorkerStats:
        report = getattr(self.engine, "prefix_cache_report", None)
        cache = report() if report is not None else PrefixCacheReport(0, 0, 0)
        return protocol.WorkerStats(
            prefix_cache_bytes=cache.bytes,
            prefix_cache_queried_tokens=cache.queried_tokens,
            prefix_cache_hit_tokens=cache.hit_tokens,
            model=self.engine.model_id,
            queues=self.queue_names(),
            host=socket.gethostname(),
            pid=os.getpid(),
            slots=self._concurrency,
            running=self.reporter.running_count,
            peak_batch=self.engine.peak_batch_size,
            tokens_total=self.engine.generated_tokens,
            tokens_per_s=round(self._tokens_per_s(), 2),
            suspended=self._suspended,
            suggested_temperature=getattr(self.engine, "suggested_temperature", None),
        )

    def _tokens_per_s(self) -> float:
        """Generation rate over the last TOKEN_RATE_WINDOW_S seconds."""
        now, total = time.monotonic(), self.engine.generated_tokens
        self._token_samples.append((now, total))
        while now - self._token_samples[0][0] > TOKEN_RATE_WINDOW_S:
            self._token_samples.popleft()
        first_time, first_total = self._token_samples[0]
        return (total - first_total) / (now - first_time) if now > first_time else 0.0

    def _dequeue(self) -> tuple[Job, Queue] | None:
        """The next job: interactive queues first, at every dequeue; the batch lane only
        while batch lines hold fewer than their share of the slots."""
        queues = self.serving_queues()
        if not self.lanes.batch_has_room():
            queues = [q for q in queues if q is not self.batch_lane]
        try:
            result = self.dequeue(DEQUEUE_TIMEOUT_S, queues)
        except redis.RedisError as exc:  # unreachable, or full (a dequeue writes: BLMOVE)
            log.warning("worker %s: cannot take a job from Redis (%s); retrying", self.name, exc)
            self._backoff.sleep()
            return None
        self._backoff.reset()
        if result is not None:
            self.lanes.taken(result[0].id, is_batch_lane(result[1].name))
        return result

    def _give_back(self, job: Job, job_queue: Queue) -> None:
        """A job taken while the stop signal arrived goes back to the front of its queue."""
        self.give_back(job, job_queue)
        self._free_slot(job.id)
        log.info("worker %s: stopping; job %s goes back to the queue", self.name, job.id)

    def _listen_for_cancellations(self) -> None:
        """A pub/sub thread: the API names jobs whose client went away."""
        listener = redis.Redis(connection_pool=self.connection.connection_pool).pubsub()

        def on_cancel(message: dict) -> None:
            self._on_cancel(protocol.cancelled_job_id(message))

        def on_error(exc: BaseException, pubsub: Any, thread: Any) -> None:
            log.warning("worker %s: cancellation listener lost Redis (%s)", self.name, exc)
            time.sleep(IDLE_POLL_S)

        listener.subscribe(**{protocol.CANCEL_CHANNEL: on_cancel})
        self._cancel_listener = listener.run_in_thread(
            sleep_time=IDLE_POLL_S, daemon=True, exception_handler=on_error
        )

    def _on_cancel(self, job_id: str) -> None:
        """The cancel listener's thread: the API says this job's client went away."""
        if self._starting.hold_cancel(job_id):
            log.info("job %s: client went away while it started", job_id)
        elif self.reporter.is_running(job_id):
            log.info("job %s: client went away, cancelling", job_id)
            self.engine.cancel(job_id)

    # -- one job ---------------------------------------------------------------------------

    def _start_job(self, job: Job, job_queue: Queue) -> None:
        """Hand the job to a preparer thread: tokenizing a long prompt takes seconds, and the
        main thread must go on taking jobs (and heartbeating) meanwhile."""
        with self._preparing_lock:
            self._preparing += 1
        future = self._preparers.submit(self._start_or_free_slot, job, job_queue)
        future.add_done_callback(self._prepared)

    def _start_or_free_slot(self, job: Job, job_queue: Queue) -> None:
        """An unexpected error must not cost a batch slot for good: a job that never reached
        the reporter gives its slot back here."""
        try:
            self._prepare_and_start(job, job_queue)
        except Exception:
            if not self.reporter.is_running(job.id):
                self._free_slot(job.id)
            raise

    def _prepared(self, future: Any) -> None:
        with self._preparing_lock:
            self._preparing -= 1
        if future.exception() is not None:
            log.error("could not start a job", exc_info=future.exception())

    def _prepare_and_start(self, job: Job, job_queue: Queue) -> None:
        if not is_mlxq_job(job):
            self._refuse_foreign(job, job_queue)
            return
        if not self._claim(job):
            return
        # Read and check the request before any other Redis write, so that one round trip
        # records the start in RQ, checks for a cancellation and tells the API, all at once.
        prepared: EngineRequest | None = None
        refusal: MlxqError | None = None
        request: JobRequest | None = None
        try:
            request = self._read_request(job)
            timeout_s = min(
                float(job.timeout or self._job_timeout_s), request.deadline - time.time()
            )
            prepared = self.engine.prepare(job.id, request, timeout_s)
        except MlxqError as error:
            refusal = error
        except Exception as exc:
            log.exception("job %s: could not prepare the request", job.id)
            refusal = GenerationFailed(f"Could not prepare the request: {exc}")
        running = RunningJob(job, job_queue, execution=None, request=request)
        # From before its cancel check until the engine has it, a cancellation for the job
        # is held (worker/starting.py): it would find no running job to stop, and be lost.
        self._starting.begin(job.id)
        submitted = False
        try:
            submitted = self._record_and_submit(running, prepared, refusal)
        finally:
            held = self._starting.end(job.id)
        if held and submitted:
            log.info("job %s: client went away while it started, cancelling", job.id)
            self.engine.cancel(job.id)

    def _record_and_submit(
        self, running: RunningJob, prepared: EngineRequest | None, refusal: MlxqError | None
    ) -> bool:
        """Record the job's start and hand it to the engine, or refuse it; returns whether
        the engine has it."""
        job = running.job
        try:
            cancelled = self._record_start(running, announce=prepared is not None)
        except redis.RedisError as exc:  # down, or full and refusing writes
            log.error("job %s: Redis failed while starting it (%s)", job.id, exc)
            if running.execution is not None:
                self.undo_start(running.execution)
            self._tell_redis_failed(job.id, exc)
            self._free_slot(job.id)
            return False
        if cancelled:
            refusal = Cancelled("The client went away before the job started.")
        if refusal is not None or prepared is None:
            self.reporter.outbox.refuse(job.id, refusal or GenerationFailed("Not prepared."))
            return False
        if self._log_content:
            log.info("job %s: request %s", job.id, prepared.request.model_dump_json())
        self.engine.submit(prepared)
        return True

    def _claim(self, job: Job) -> bool:
        """Become the job's one runner. A job can be taken twice: the API puts a job back in
        its queue when the worker that took it does not start it (a worker that paused with
        the job in its hands); whichever worker starts it first runs it, the other drops it."""
        try:
            claimed = protocol.claim_job(self.connection, job.id, self.name, self._event_ttl_s)
        except redis.RedisError as exc:  # down, or full and refusing writes
            log.error("job %s: Redis failed while taking it (%s)", job.id, exc)
            self._tell_redis_failed(job.id, exc)
            self._free_slot(job.id)
            return False
        if not claimed:
            log.info("job %s: another worker runs it; dropped", job.id)
            self._free_slot(job.id)
        return claimed

    def _tell_redis_failed(self, job_id: str, exc: Exception) -> None:
        """The job cannot start; its client hears why at once, not at its deadline."""
        message = (
            "Redis is full (maxmemory) and refuses new work; try again shortly."
            if isinstance(exc, redis.exceptions.OutOfMemoryError)
            else f"Redis failed while the request was starting: {exc}"
        )
        event = ErrorEvent(seq=0, code=ErrorCode.REDIS_UNAVAILABLE, message=message)
        with contextlib.suppress(redis.RedisError):
            protocol.tell_waiter(self.connection, job_id, event)

    def _record_start(self, running: RunningJob, announce: bool) -> bool:
        """RQ's start of a job and mlxq's own writes, in one round trip; returns whether the
        job's client has already gone away."""
        job = running.job
        with self.connection.pipeline() as pipeline:
            running.execution = self.add_start(pipeline, job, running.queue)
            protocol.add_cancel_check(pipeline, job.id)
            cancelled_at = len(pipeline) - 1
            protocol.add_running_job(pipeline, self.name, job.id)  # its events may be sent
            if announce:  # "started" means accepted: a refused job's first event is its error
                started = StartedEvent(seq=running.take_seq(), worker=self.name)
                protocol.add_event(pipeline, job.id, started, self._event_ttl_s)
            # RQ's BUSY and the reporter's IDLE (when the last job ends) must not cross: the
            # start and the count it changes happen together, under the state lock.
            with self._state_lock:
                results = pipeline.execute()
                self.reporter.track(running)
        return bool(results[cancelled_at])

    def _refuse_foreign(self, job: Job, job_queue: Queue) -> None:
        """Only mlxq's own job function runs here: RQ would import any dotted path it is given.
        A job planted by someone with access to Redis is failed before RQ does anything else
        with it: no callbacks, no webhooks, no retries or repeats it may carry."""
        log.warning("job %s: refused, not an mlxq job", job.id)
        why = f"Refused: an mlxq worker runs only {sorted(ALLOWED_FUNCTIONS)}."
        try:
            self.fail_foreign(job, job_queue, why, self._refused_ttl_s)
        except Exception:  # it stays in RQ as it is; it never runs either way
            log.exception("job %s: could not record its refusal", job.id)
        self._free_slot(job.id)

    def _read_request(self, job: Job) -> JobRequest:
        """The job's request, of the kind its function names (generation or embedding)."""
        try:
            request = read_job_request(job)
        except UnreadableJob as exc:
            raise InvalidRequest(f"Malformed job payload: {exc}.") from exc
        if time.time() > request.deadline:
            raise JobTimedOut("The request's deadline passed while it waited in the queue.")
        return request

    def _free_slot(self, job_id: str) -> None:
        self.lanes.freed(job_id)
        self._slots.release()

    def _job_done(self, job_id: str) -> None:
        """Reporter thread: a job has ended in RQ; its slot is free again."""
        self._free_slot(job_id)
        with self._state_lock:
            if self.reporter.running_count == 0 and not self._suspended:
                try:
                    self.show_state(suspended=False, running=0)
                except redis.RedisError as exc:  # RQ's display only; the next start sets it
                    log.warning("worker %s: could not show its idle state (%s)", self.name, exc)

    def _drain(self) -> None:
        deadline = time.monotonic() + self._drain_timeout_s
        self._preparers.shutdown(wait=True)  # jobs being prepared start, then drain
        while self.reporter.running_count and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_S)
        if self.reporter.running_count:
            log.warning(
                "worker %s: %d job(s) still running after the drain timeout",
                self.name,
                self.reporter.running_count,
            )

    def _deregister(self) -> None:
        """Leave the live set, and hand requests still routed to this worker to the others."""
        try:
            protocol.deregister_worker(self.connection, self.name)
            moved = release_queue(self.connection, self.own_queue.name)
            if moved:
                log.info("worker %s: %d routed request(s) go to the shared queue", self.name, moved)
        except redis.RedisError as exc:
            log.warning("worker %s: could not deregister (%s)", self.name, exc)
