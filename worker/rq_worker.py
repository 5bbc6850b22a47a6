"""An RQ worker that runs many jobs at once in one process, through a batching engine.

RQ has no public way to run several jobs concurrently in one process, so this worker keeps
RQ's bookkeeping (registration, heartbeats, executions, registries, results; reached through
shared/rq_bridge/) but replaces its one-job-at-a-time loop. The worker never forks, so a
loaded MLX model is safe. It runs seven threads, each owning its state (docs/architecture.md
has the table; the second preparer starts when two jobs are prepared at once):

- the **main thread** (``BatchingWorker.work``, this module) heartbeats (worker/heartbeat.py),
  waits for a free batch slot, takes the next job and hands it to a preparer;
- two **preparer threads** (worker/job_starter.py) claim, read, tokenize and record the start
  of one job each, then hand it to the engine (``engine.submit``) or refuse it
  (``reporter.outbox.refuse``);
- the **engine thread** (worker/mlx_engine.py, worker/embedding_engine.py) generates and
  posts its outputs to the reporter's outbox;
- the **reporter thread** (worker/reporter.py) publishes events and ends jobs in RQ, then
  frees the job's slot (``_job_done``);
- the **cancel listener** (worker/cancel_listener.py), a redis-py pub/sub thread, forwards
  the API's cancellations to ``engine.cancel`` (or holds them for a job still starting);
- **RQ's command listener**, a redis-py pub/sub thread RQ starts in ``bootstrap``
  (``Worker.subscribe``, channel ``rq:pubsub:<worker name>``), handles RQ's commands such as
  ``rq``'s ``send_shutdown_command`` (a SIGINT to this process: a graceful stop).

Everything a worker is configured with comes in one ``WorkerConfig`` (worker/config.py).
"""

import logging
import threading
import time
from typing import Any

import redis
from rq.job import Job
from rq.queue import Queue

from shared.backoff import Backoff
from shared.keys import is_batch_lane, worker_queue_name
from shared.protocol import deregister_worker
from shared.rq_bridge import ConcurrentWorkerBase, release_queue
from worker.cancel_listener import CancelListener
from worker.config import WorkerConfig
from worker.engine_api import Engine
from worker.fair_share import KeyQueues
from worker.heartbeat import Heartbeat
from worker.job_starter import JobStarter
from worker.lanes import BatchLanes, LaneSlots
from worker.reporter import Outbox, Reporter
from worker.starting import StartingJobs

log = logging.getLogger(__name__)

DEQUEUE_TIMEOUT_S = 1
"""How long one blocking dequeue waits: bounds how late a stop request is noticed."""
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
        config: WorkerConfig,
        **rq_options: Any,
    ) -> None:
        """``queues``: the model's shared queue. The worker also serves its own queue (first),
        the API keys' queues in turn with the shared one (worker/fair_share.py), and the
        batches' lanes (last, into at most ``config.batch_slots`` slots). The engine answers
        into ``outbox``, the reporter's. ``rq_options`` are RQ's own (``connection``,
        ``serializer``, ``name``)."""
        shared_queue = queues[0]
        super().__init__(queues, **rq_options)
        self.key_queues = KeyQueues(shared_queue)
        self.batch_lanes = BatchLanes(shared_queue)
        self.own_queue = Queue(
            worker_queue_name(shared_queue.name, self.name),
            connection=self.connection,
            serializer=shared_queue.serializer,
        )
        self.serve_first(self.own_queue)  # requests routed here reuse this worker's cache
        self.config = config
        self.engine = engine
        self.lanes = LaneSlots(config.batch_slots)
        self._slots = threading.Semaphore(config.concurrency)
        self._state_lock = threading.Lock()
        """Held while the running count and RQ's worker state change together."""
        self._backoff = Backoff(first_s=0.5, cap_s=10.0)
        self.reporter = Reporter(
            self.connection,
            self.name,
            self,
            self._job_done,
            engine.cancel,
            outbox=outbox,
            config=config,
            claims_prefixes=engine.reuses_prefixes,
        )
        starting = StartingJobs()
        self.beat = Heartbeat(self, engine, self.reporter, self._state_lock, config)
        self.starter = JobStarter(
            self, engine, self.reporter, starting, self._state_lock, config, self._free_slot
        )
        self.cancels = CancelListener(self.connection, self.name, engine, self.reporter, starting)

    # -- the loop --------------------------------------------------------------------------

    def work(  # type: ignore[override]  # RQ's other options do not apply
        self,
        burst: bool = False,
        logging_level: str | None = None,
        *,
        handle_signals: bool = True,
        **_: Any,
    ) -> bool:
        """Serve jobs until stopped (SIGINT, SIGTERM, ``stop_after_running_jobs``), or in
        ``burst`` mode until the queues are empty. ``handle_signals=False`` runs the loop in
        a thread other than the main one (Python lets only the main thread install signal
        handlers; the in-process tests do it): stop it with ``stop_after_running_jobs``."""
        self.bootstrap(logging_level or "INFO")
        if handle_signals:
            self.install_signal_handlers()
        self.engine.start()
        self.reporter.start()
        self.cancels.start()
        worked = False
        try:
            while not self.stop_requested:
                self.beat.tick()
                if self.beat.suspended:
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
                self.starter.start(*dequeued)
                worked = True
        finally:
            self._drain()
            self.engine.stop()
            self.reporter.stop()
            self.cancels.stop()
            self._deregister()
            self.teardown()
        return worked

    def on_stop_signal(self) -> None:
        log.info("worker %s: stopping; finishing %d job(s)", self.name, self.reporter.running_count)

    def _dequeue(self) -> tuple[Job, Queue] | None:
        """The next job: interactive queues first, at every dequeue (this worker's own, then
        the keys' and the shared one in turn); the batches' lanes, in turn, only while batch
        lines hold fewer than their share of the slots."""
        try:
            queues = [self.own_queue, *self.key_queues.in_turn()]
            if self.lanes.batch_has_room():
                queues += self.batch_lanes.in_turn()
            result = self.dequeue(DEQUEUE_TIMEOUT_S, queues)
        except redis.RedisError as exc:  # unreachable, or full (a dequeue writes: BLMOVE)
            log.warning("worker %s: cannot take a job from Redis (%s); retrying", self.name, exc)
            self._backoff.sleep()
            return None
        self._backoff.reset()
        if result is not None:
            self.lanes.taken(result[0].id, is_batch_lane(result[1].name))
            self.key_queues.served(result[1].name)
            self.batch_lanes.served(result[1].name)
        return result

    def _give_back(self, job: Job, job_queue: Queue) -> None:
        """A job taken while the stop signal arrived goes back to the front of its queue."""
        self.give_back(job, job_queue)
        self._free_slot(job.id)
        log.info("worker %s: stopping; job %s goes back to the queue", self.name, job.id)

    # -- batch slots -------------------------------------------------------------------------

    def _free_slot(self, job_id: str) -> None:
        """A preparer (a job that never reached the reporter) or the reporter (a job that
        ended): the job's slot is free again."""
        self.lanes.freed(job_id)
        self._slots.release()

    def _job_done(self, job_id: str) -> None:
        """Reporter thread: a job has ended in RQ; its slot is free again."""
        self._free_slot(job_id)
        with self._state_lock:
            if self.reporter.running_count == 0 and not self.beat.suspended:
                try:
                    self.show_state(suspended=False, running=0)
                except redis.RedisError as exc:  # RQ's display only; the next start sets it
                    log.warning("worker %s: could not show its idle state (%s)", self.name, exc)

    # -- stopping ------------------------------------------------------------------------------

    def _drain(self) -> None:
        deadline = time.monotonic() + self.config.drain_timeout_s
        self.starter.shutdown()  # jobs being prepared start, then drain
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
            deregister_worker(self.connection, self.name)
            moved = release_queue(self.connection, self.own_queue.name)
            if moved:
                log.info("worker %s: %d routed request(s) go to the shared queue", self.name, moved)
        except redis.RedisError as exc:
            log.warning("worker %s: could not deregister (%s)", self.name, exc)
