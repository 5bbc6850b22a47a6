"""The worker's heartbeat, on the main thread, once a second (``tick``).

One round trip tells the fleet the worker is alive (``protocol.add_heartbeat``: its typed
``WorkerStats``, its running set), adds its figures to the fleet's history and renews RQ's
own heartbeat. Its reply says whether the reaper declared the worker dead meanwhile (it
paused: a sleeping Mac): then the worker drops its jobs and registers again. The beat also
stops the jobs whose API process is gone, and notices ``rq suspend`` and ``rq resume``.

The same round trip publishes what the worker holds (its models, their memory and
keep-alive) and, when it changed, its catalogue; then the model keeper (worker/model_keeper.py)
unloads idle models and applies the placement rule, once a second.

It owns the suspension flag (written here, on the main thread; read by the reporter thread
under the state lock) and the token-rate samples.
"""

import collections
import logging
import os
import socket
import threading
import time
from typing import Any

import redis

from shared import history, protocol
from shared.rq_bridge import ConcurrentWorkerBase
from worker.config import WorkerConfig
from worker.engine_api import Engine
from worker.group.ranks import joined
from worker.model_keeper import ModelKeeper
from worker.reporter import Reporter

log = logging.getLogger(__name__)

TOKEN_RATE_WINDOW_S = 10.0
"""Window over which the worker's reported tokens/s is averaged."""
DROP_WAIT_S = 30.0
"""After a pause, how long the worker waits for its engine to drop its old copies (one
decode step, usually) before it takes new jobs."""
DROP_POLL_S = 0.02


class Heartbeat:
    def __init__(
        self,
        worker: ConcurrentWorkerBase,
        engine: Engine,
        reporter: Reporter,
        state_lock: threading.Lock,
        config: WorkerConfig,
        keeper: ModelKeeper,
    ) -> None:
        """``state_lock``: held while the running set and RQ's worker state change together
        (the worker's, shared with the job starter and the reporter). ``keeper``: the
        worker's models (what it holds, its catalogue, placement)."""
        self._worker = worker
        self._engine = engine
        self._keeper = keeper
        self._reporter = reporter
        self._state_lock = state_lock
        self._slots = config.concurrency
        self._last_beat = 0.0
        self._missing_since: dict[str, float] = {}
        self._token_samples: collections.deque[tuple[float, int]] = collections.deque()
        self.suspended = False
        """``rq suspend`` is in force: the worker takes no new job."""

    def tick(self) -> None:
        """Beat, if HEARTBEAT_INTERVAL_S has passed since the last beat."""
        if time.monotonic() - self._last_beat < protocol.HEARTBEAT_INTERVAL_S:
            return
        self._last_beat = time.monotonic()
        worker = self._worker
        try:
            # The beat rewrites the running set from this worker's own list: under the state
            # lock, so that no job starts (on a preparer thread) between the two.
            with self._state_lock, worker.connection.pipeline() as pipeline:
                running = [r.job.id for r in self._reporter.running_jobs()]
                stats = self._stats()
                protocol.add_heartbeat(pipeline, worker.name, stats, worker.worker_ttl, running)
                history.add_worker_sample(pipeline, worker.name, stats, time.time())
                worker.heartbeat(pipeline=pipeline)
                catalogue = self._keeper.catalogue_entries()
                ttl = worker.worker_ttl + protocol.STATS_GRACE_S
                protocol.add_catalogue(pipeline, worker.name, catalogue, ttl)
                reaped = pipeline.execute()[0]
            self._keeper.catalogue_sent(catalogue)
            if reaped:
                self._rejoin()
            self._stop_orphans()
            self._note_suspension(worker.is_suspended())
            if worker.should_run_maintenance_tasks:
                worker.run_maintenance_tasks()
            self._keeper.tick()
        except redis.RedisError as exc:  # unreachable, or full (maxmemory): beat again later
            log.warning("worker %s: heartbeat failed (%s)", worker.name, exc)

    def _stop_orphans(self) -> None:
        """Stop the jobs whose API process is gone (it crashed or was killed): nobody waits
        for their answers. A waiter must be missing for WAITER_GRACE_S first, since a Redis
        restart loses the API processes' beats for a moment."""
        by_waiter: dict[str, list[str]] = {}
        for running in self._reporter.running_jobs():
            if running.request is not None and running.request.waiter:
                by_waiter.setdefault(running.request.waiter, []).append(running.job.id)
        now = time.monotonic()
        missing = protocol.missing_waiters(self._worker.connection, set(by_waiter))
        self._missing_since = {w: self._missing_since.get(w, now) for w in missing}
        for waiter, since in self._missing_since.items():
            if now - since >= protocol.WAITER_GRACE_S:
                for job_id in by_waiter[waiter]:
                    log.info("job %s: its API process is gone; stopping it", job_id)
                    self._engine.cancel(job_id)

    def _rejoin(self) -> None:
        """This worker paused (a sleeping Mac, a stopped VM) long enough to be declared dead:
        its jobs went to other workers or failed. Drop them all without a word, and register
        again with RQ, which forgot it; every slot is free again once they are dropped."""
        log.warning(
            "worker %s: declared dead during a pause; dropping its jobs, rejoining",
            self._worker.name,
        )
        copies = [running.job.id for running in self._reporter.running_jobs()]
        self._reporter.outbox.reaped()
        self._wait_until_dropped(copies)
        self._worker.rejoin()
        self._worker.show_state(suspended=self.suspended, running=0)

    def _wait_until_dropped(self, job_ids: list[str]) -> None:
        """Take no new job until the reporter and the engine have let go of these: the queue
        may give this worker one of them again (the reaper retried it), under the same id, and
        the old copy's cancellation must not stop the new one."""
        give_up_at = time.monotonic() + DROP_WAIT_S
        while time.monotonic() < give_up_at:
            if not any(
                self._reporter.is_running(job_id) or self._engine.holds(job_id)
                for job_id in job_ids
            ):
                return
            time.sleep(DROP_POLL_S)
        log.warning("worker %s: old copies not dropped after %gs", self._worker.name, DROP_WAIT_S)

    def _note_suspension(self, suspended: bool) -> None:
        if suspended == self.suspended:
            return
        log.info(
            "worker %s: %s",
            self._worker.name,
            "suspended (rq suspend): taking no new job" if suspended else "resumed",
        )
        with self._state_lock:
            self.suspended = suspended
            self._worker.show_state(suspended=suspended, running=self._reporter.running_count)

    def _stats(self) -> protocol.WorkerStats:
        engine = self._engine
        cache, kv = engine.prefix_cache_report(), engine.kv_cache_report()
        drafts = engine.speculation_report()
        return protocol.WorkerStats(
            prefix_cache_budget_bytes=cache.budget_bytes,
            kv_cache_bytes=kv.bytes,
            kv_cache_budget_bytes=kv.budget_bytes,
            names_connections=True,
            prefix_cache_bytes=cache.bytes,
            prefix_cache_queried_tokens=cache.queried_tokens,
            prefix_cache_hit_tokens=cache.hit_tokens,
            draft_tokens_proposed=drafts.proposed,
            draft_tokens_accepted=drafts.accepted,
            model=engine.model_id,
            queues=self._keeper.queues.names(),
            host=socket.gethostname(),
            pid=os.getpid(),
            slots=self._slots,
            running=self._reporter.running_count,
            peak_batch=engine.peak_batch_size,
            tokens_total=engine.generated_tokens,
            tokens_per_s=round(self._tokens_per_s(), 2),
            suspended=self.suspended,
            suggested_temperature=engine.suggested_temperature,
            held=self._keeper.host.report(),
            loading=self._keeper.host.loading(),
            memory_budget=self._keeper.host.budget,
            memory_used=self._keeper.host.used_bytes(),
            **_group_fields(),
        )

    def _tokens_per_s(self) -> float:
        """Generation rate over the last TOKEN_RATE_WINDOW_S seconds."""
        now, total = time.monotonic(), self._engine.generated_tokens
        self._token_samples.append((now, total))
        while now - self._token_samples[0][0] > TOKEN_RATE_WINDOW_S:
            self._token_samples.popleft()
        first_time, first_total = self._token_samples[0]
        return (total - first_total) / (now - first_time) if now > first_time else 0.0


def _group_fields() -> dict[str, Any]:
    """A worker group's rank 0 reports the group: its ranks, hosts and split."""
    group = joined()
    if group is None:
        return {}
    return {"group_ranks": group.size, "group_hosts": group.hosts, "group_split": group.split}
