"""Running one job from the API's side: enqueue, wait with deadlines, yield its events.

Every dialect's route, streaming or not, goes through ``JobRunner.events``. A job whose
consumer stops early (the client went away, a deadline) is cancelled: dropped from the
queue, or stopped by its worker within one decode step.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.access.accounting import Accounting
from api.core.event_hub import EventHub, JobEvents
from api.core.metrics import Metrics, RequestWatch
from api.core.models import refusal
from api.core.submitter import JobSubmitter
from shared import protocol
from shared.errors import ErrorCode, JobTimedOut, MlxqError, NoWorkerAvailable, RedisUnavailable
from shared.fleet_view import availability
from shared.keys import shared_queue_of
from shared.rq_bridge import recover_taken_job
from shared.schemas import (
    DoneEvent,
    ErrorEvent,
    JobEvent,
    JobRequest,
    StartedEvent,
    TokenEvent,
)
from shared.settings import Settings

log = logging.getLogger(__name__)

RESULT_GRACE_S = 5.0
"""Extra wait past the deadline, for the worker's own timeout error to arrive first."""
TAKEN_CHECK_S = 2.0
"""While a job waits, how often the API checks that it is queued or started (not stuck in
the hands of a worker that stalled, not lost by Redis)."""
CLOSE_WAIT_S = 2.0
"""On shutdown, how long cancellations under way may take to reach Redis."""
OUTAGE_RETRY_S = 0.5
"""While Redis is unreachable, how often a waiting request tries its checks again."""
SUSPECT_TTL_S = 30
"""A job seen taken-but-not-started is put back when the next check sees it so again."""


class Keepalive:
    """Yielded by ``events`` after ``keepalive_s`` without an event (a stream sends a comment)."""


KEEPALIVE: Final = Keepalive()


class _Outage:
    """How long Redis has been unreachable for one waiting request. A waiter rides out a
    short outage (a Redis restart with AOF takes seconds, and the job's events wait in its
    stream); only one that lasts past MLXQ_REDIS_OUTAGE_GRACE is an error."""

    def __init__(self, grace_s: float) -> None:
        self._grace_s = grace_s
        self._since: float | None = None

    def failed(self, now: float, exc: RedisError) -> None:
        if self._since is None:
            self._since = now
            log.warning("Redis unreachable while a request waits (%s); riding it out", exc)
        if now - self._since > self._grace_s:
            raise RedisUnavailable(
                f"Redis was unreachable for {now - self._since:.0f} s while the request "
                f"waited (MLXQ_REDIS_OUTAGE_GRACE: {self._grace_s:g} s): {exc}"
            ) from exc

    def over(self) -> None:
        self._since = None

    def next_try(self, wake_at: float, now: float) -> float:
        """When to look again: during an outage, not before OUTAGE_RETRY_S from now."""
        return wake_at if self._since is None else max(wake_at, now + OUTAGE_RETRY_S)


class _Placement:
    """The queue a job waits in; it changes when a routed job moves to its home queue (its
    key's, or the shared one)."""

    def __init__(self, queue: str, home: str) -> None:
        self.queue = queue
        self.home = home

    @property
    def routed(self) -> bool:
        return shared_queue_of(self.queue) != self.queue

    @property
    def fallback(self) -> str:
        """Where the job goes when it must leave a worker that took it and stalled: a routed
        job's home (never that worker's own queue), else the queue it is in (a batch's line
        stays in its lane)."""
        return self.home if self.routed else self.queue


class JobRunner:
    def __init__(
        self,
        connection: aioredis.Redis,
        hub: EventHub,
        submitter: JobSubmitter,
        settings: Settings,
        metrics: Metrics,
        accounting: Accounting | None = None,
    ) -> None:
        """``accounting``: counts each answer's usage to its key (api/access/)."""
        self._connection = connection
        self._accounting = accounting
        self._hub = hub
        self._submitter = submitter
        self._settings = settings
        self._metrics = metrics
        self._background: set[asyncio.Task] = set()
        self.instance = uuid.uuid4().hex
        """This API process, named on every job it waits for (workers stop a job whose
        API process stops beating: see ``beat``)."""

    async def events(
        self,
        request: JobRequest,
        keepalive_s: float | None = None,
        *,
        job_id: str | None = None,
        batch_id: str | None = None,
        adopt_from: str | None = None,
        on_end: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[JobEvent | Keepalive]:
        """The job's events up to and including its DoneEvent; raises MlxqError on failure.
        ``job_id``: the caller's own id for the job (a batch records it); ``batch_id``: the
        job is a line of that batch: it waits in the batch's low-priority lane, and is not
        tied to this process (the batch's next driver adopts it). ``adopt_from``: the job was
        enqueued already, in that queue (by a driver that died): follow it from its first
        event instead of enqueueing it again. ``on_end``: called once the job is over for
        this request, however it ended (a key's concurrency slot is freed)."""
        job_id = job_id or uuid.uuid4().hex
        finished = failed = False
        watch = self._metrics.watch(request.model)
        home = self._submitter.home_queue(request)
        placed = _Placement(adopt_from or home, home)
        waiter = None if batch_id or adopt_from else self.instance
        request = request.model_copy(update={"waiter": waiter})
        enqueue: asyncio.Future[str] | None = None
        try:
            async with self._hub.subscribe(job_id) as inbox:
                events = JobEvents(job_id, inbox, self._connection)
                if adopt_from is None:
                    # Shielded: a cancellation (the client left) must not land inside
                    # redis-py's pipeline, which can swallow it; the job is then taken back
                    # once enqueued.
                    enqueue = asyncio.ensure_future(
                        self._submitter.enqueue(request, job_id, batch_id)
                    )
                    placed.queue = await asyncio.shield(enqueue)
                else:
                    await events.catch_up()  # what it did before this process followed it
                following = self._follow(job_id, request, events, keepalive_s, placed, watch)
                async for event in following:
                    finished = isinstance(event, DoneEvent)
                    if finished and self._accounting is not None:
                        assert isinstance(event, DoneEvent)
                        batch = batch_id is not None
                        await self._accounting.answered(self._connection, request, event, batch)
                    yield event
        except MlxqError as exc:
            finished = not isinstance(exc, JobTimedOut)  # a timed-out job may still be running
            failed = True
            watch.failed(exc.code)
            raise
        except RedisError as exc:
            failed = True
            watch.failed(ErrorCode.REDIS_UNAVAILABLE)
            if isinstance(exc, OutOfMemoryError):  # noeviction: Redis refuses writes when full
                raise RedisUnavailable(
                    "Redis is full (maxmemory) and refuses new requests; try again shortly."
                ) from exc
            raise RedisUnavailable(f"Redis is unreachable: {exc}") from exc
        finally:
            if not finished:
                if not failed:  # the client went away
                    watch.failed(ErrorCode.CANCELLED)
                self._cancel_later(placed, job_id, enqueue)
            if on_end is not None:
                self.later(on_end())

    def later(self, work: Awaitable[None]) -> None:
        """Run ``work`` in a task of its own (it may be awaited while this one is being
        cancelled); shutdown waits for it a moment (``aclose``)."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """On shutdown: let the cancellations under way reach Redis (bounded)."""
        if self._background:
            await asyncio.wait(self._background, timeout=CLOSE_WAIT_S)

    async def run(
        self,
        request: JobRequest,
        *,
        job_id: str | None = None,
        batch_id: str | None = None,
        adopt_from: str | None = None,
        watch: Callable[[JobEvent], None] | None = None,
        on_end: Callable[[], Awaitable[None]] | None = None,
    ) -> DoneEvent:
        """The job's final answer, for callers that do not stream; ``watch`` sees each
        event on the way (a dialect that reports timings)."""
        events = self.events(
            request, job_id=job_id, batch_id=batch_id, adopt_from=adopt_from, on_end=on_end
        )
        async for event in events:
            if watch is not None and not isinstance(event, Keepalive):
                watch(event)
            if isinstance(event, DoneEvent):
                return event
        raise AssertionError("events() ends with a DoneEvent or raises")

    def _cancel_later(
        self, placed: "_Placement", job_id: str, enqueue: "asyncio.Future[str] | None"
    ) -> None:
        """Cancel in a task of its own: this runs while the request's task is cancelled.
        An enqueue still under way is let finish first, then taken back."""

        async def cancel() -> None:
            try:
                if enqueue is not None and not enqueue.done():
                    with contextlib.suppress(Exception):
                        placed.queue = await enqueue
                if enqueue is not None and (enqueue.cancelled() or enqueue.exception()):
                    return  # it never reached the queue
                await self._submitter.cancel(placed.queue, job_id)
            except RedisError as exc:
                log.warning("could not cancel job %s: %s", job_id, exc)

        self.later(cancel())

    async def _follow(
        self,
        job_id: str,
        request: JobRequest,
        events: JobEvents,
        keepalive_s: float | None,
        placed: "_Placement",
        watch: RequestWatch,
    ) -> AsyncIterator[JobEvent | Keepalive]:
        loop = asyncio.get_running_loop()
        enqueued_at = last_sent = loop.time()
        deadline = enqueued_at + (request.deadline - time.time())
        queue_deadline = min(enqueued_at + self._settings.queue_timeout, deadline)
        reroute_at = enqueued_at + self._settings.route_wait
        check_at = enqueued_at + TAKEN_CHECK_S
        started = False
        outage = _Outage(self._settings.redis_outage_grace)
        self._metrics.recent.count_request()
        while True:
            until = deadline + RESULT_GRACE_S if started else queue_deadline
            timers = [until]
            if keepalive_s is not None:
                timers.append(last_sent + keepalive_s)
            if not started:
                timers += [check_at, reroute_at] if placed.routed else [check_at]
            wake_at = outage.next_try(min(timers), loop.time())
            event = await events.next(max(0.0, wake_at - loop.time()))
            now = loop.time()
            if keepalive_s is not None and event is None and now >= last_sent + keepalive_s:
                last_sent = now
                yield KEEPALIVE
            if event is None:
                # Redis may be briefly away (a restart): the checks are tried again later.
                try:
                    if not started and placed.routed and now >= reroute_at:
                        await self._reroute(placed, job_id)
                    if not started and now >= check_at:
                        await self._check_taken(placed, job_id)
                        check_at = now + TAKEN_CHECK_S
                    if now < until:
                        outage.over()
                        continue
                    if started:
                        raise JobTimedOut(
                            "The request's deadline passed before the answer was ready."
                        )
                    refused: MlxqError | None = None
                    if until < deadline:
                        serves, refused = await self._fleet_can_serve(request.model)
                        if serves:
                            queue_deadline = min(now + self._settings.queue_timeout, deadline)
                            outage.over()
                            continue  # a busy fleet, or a model loading: keep waiting
                    if await self._submitter.withdraw(placed.queue, job_id):
                        raise refused or self._queue_timeout_error(
                            request, deadline_passed=until >= deadline
                        )
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    outage.failed(now, exc)
                    continue
                outage.over()
                started = True  # a worker took it just now: wait for its answer
                continue
            outage.over()
            last_sent = now
            if isinstance(event, StartedEvent):
                started = True
                watch.started(now - enqueued_at)
            elif isinstance(event, TokenEvent):
                watch.token(now - enqueued_at)
            elif isinstance(event, DoneEvent):
                watch.done(event, now - enqueued_at)
            if isinstance(event, ErrorEvent):
                raise MlxqError(event.message, code=event.code, partial=event.partial_text)
            yield event
            if isinstance(event, DoneEvent):
                return

    async def _check_taken(self, placed: "_Placement", job_id: str) -> None:
        """A job out of its queue that nobody started goes back (a stalled or dying worker took
        it; a routed job goes home); a routed job its worker's leaving moved home is followed
        there; a job Redis no longer has (a restart without persistence) is a prompt 503."""
        found = await self._connection.eval(
            *recover_taken_job(
                job_id,
                placed.queue,
                placed.fallback,
                protocol.job_owner_key(job_id),
                protocol.job_suspect_key(job_id),
                SUSPECT_TTL_S,
            )
        )
        if found == 1:
            log.warning("job %s: taken but not started; back in %s", job_id, placed.fallback)
        elif found == -1:
            raise RedisUnavailable(
                "Redis lost this request before a worker started it (restarted without "
                "persistence?); send it again."
            )
        if found in (1, 2):
            placed.queue = placed.fallback

    async def _fleet_can_serve(self, model: str) -> tuple[bool, MlxqError | None]:
        """Whether a live worker holds the model or may load it (the placement has one load
        it: worker/placement.py); when every worker that lists it refuses it (its load
        failed meanwhile), the refusal to answer with."""
        state, seen = await availability(self._connection, model)
        if state == "refused" and seen is not None:
            return False, refusal(seen)
        return state in ("served", "loadable"), None

    async def _reroute(self, placed: "_Placement", job_id: str) -> None:
        """The worker this job was routed to has not taken it within MLXQ_ROUTE_WAIT: any
        worker may (the prefix is then prefilled again, which beats waiting)."""
        moved = await self._submitter.to_home_queue(placed.queue, job_id)
        if moved is not None:
            log.info("job %s: not taken from %s in time; moved to %s", job_id, placed.queue, moved)
            self._metrics.reroutes.inc()
        placed.queue = moved or placed.home

    def _queue_timeout_error(self, request: JobRequest, deadline_passed: bool) -> MlxqError:
        if deadline_passed:
            return JobTimedOut("The request's deadline passed while it waited in the queue.")
        return NoWorkerAvailable(
            f"No worker took the request within {self._settings.queue_timeout:g} s. "
            f"Is a worker for model {request.model!r} running?"
        )
