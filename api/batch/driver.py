"""Driving batches: every API process runs a ``BatchDriver``; each batch is driven by one.

A driver takes a batch's lease in Redis (renewed while it drives; it expires when the
process dies), and keeps up to MLXQ_BATCH_WINDOW of its lines in flight as jobs on the
model's batch lane, each waited for through the same ``JobRunner`` as a live request
(deadlines, retries of jobs whose worker died, cancellation). Each line's output or error
line is stored once. When the process driving a batch dies, its lease expires and another
process (or the same one, restarted) takes over: it stops the attempts the dead driver
left behind and runs every line that has no result yet, so no line is lost and none is
answered twice in the output.
"""

import asyncio
import functools
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.exceptions import RedisError

from api.batch import store
from api.batch.lines import ENDPOINTS, Line, parse_lines
from api.batch.records import error_line, new_file_meta, result_line
from api.core.runner import JobRunner
from api.core.submitter import JobSubmitter
from shared.backoff import Backoff
from shared.errors import (
    ErrorCode,
    JobTimedOut,
    MlxqError,
    NoWorkerAvailable,
    QueueFull,
    RedisUnavailable,
)
from shared.keys import batch_lane_name
from shared.rq_bridge import forget_queue_async
from shared.settings import Settings

log = logging.getLogger(__name__)

LEASE_TTL_S = 10.0
"""A batch whose driver stops renewing its lease for this long is taken over."""
RENEW_EVERY_S = 3.0
SCAN_EVERY_S = 1.0
"""How often each API process looks for batches that nobody drives (and for cancellations)."""
WAITING_FOR_WORKERS = (NoWorkerAvailable, QueueFull, RedisUnavailable)
"""A line that meets these has not been tried: it waits and goes again."""
WORKER_LOST_RETRIES = 2
"""A line whose worker died (after the reaper's own retry) is sent again this many times."""

T = TypeVar("T")


class BatchDriver:
    def __init__(
        self,
        connection: aioredis.Redis,
        runner: JobRunner,
        submitter: JobSubmitter,
        settings: Settings,
    ) -> None:
        self._connection = connection
        self._runner = runner
        self._submitter = submitter
        self._settings = settings
        self._driving: dict[str, asyncio.Task] = {}

    async def run_forever(self) -> None:
        """Take over every batch nobody drives; end when cancelled (the API stops)."""
        try:
            while True:
                try:
                    await self._take_over()
                except RedisError as exc:
                    log.debug("batches: Redis unavailable (%s)", exc)
                raise_if_cancelled()
                await asyncio.sleep(SCAN_EVERY_S)
        finally:
            for task in list(self._driving.values()):
                task.cancel()
            await asyncio.gather(*self._driving.values(), return_exceptions=True)

    async def _take_over(self) -> None:
        owner = self._runner.instance
        for batch_id in await store.active_batches(self._connection):
            if batch_id in self._driving:
                continue
            if await store.take_lease(self._connection, batch_id, owner, LEASE_TTL_S):
                task = asyncio.create_task(self._drive(batch_id), name=f"batch {batch_id}")
                self._driving[batch_id] = task
                task.add_done_callback(functools.partial(self._forget, batch_id))

    def _forget(self, batch_id: str, _: asyncio.Task) -> None:
        self._driving.pop(batch_id, None)

    async def _drive(self, batch_id: str) -> None:
        try:
            await _BatchRun(self, batch_id).run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batch %s: its driver failed; another will take over", batch_id)


class _BatchRun:
    """One driver's run of one batch, from taking it over to its end (or losing the lease)."""

    def __init__(self, driver: BatchDriver, batch_id: str) -> None:
        self._driver = driver
        self._connection = driver._connection
        self._settings = driver._settings
        self._batch_id = batch_id
        self._in_flight: set[asyncio.Task] = set()
        self._lanes: set[str] = set()
        """The batch's own lanes (one per model its lines name)."""
        self._models: dict[str, str] = {}
        """Model name -> served id, resolved when the batch was created (aliases)."""

    async def run(self) -> None:
        state = await store.batch_state(self._connection, self._batch_id)
        if state is None or state.ended:
            return
        self._models = state.record.get("models") or {}
        lines = await self._lines(state)
        if lines is None:
            return
        self._lanes = {self._lane(self._model(line)) for line in lines}
        done = await store.done_lines(self._connection, self._batch_id)
        attempts = await store.attempts(self._connection, self._batch_id)
        pending = deque(line for line in lines if line.number not in done)
        for line in [line for line in pending if line.number in attempts]:
            pending.remove(line)  # running already: followed, not started again
            self._launch(line, state.record, adopt=attempts[line.number])
        log.info(
            "batch %s: driving %d line(s) still to answer, %d adopted from an earlier driver",
            self._batch_id,
            len(pending) + len(self._in_flight),
            len(self._in_flight),
        )
        renew_at = time.monotonic() + RENEW_EVERY_S
        expires_at = state.record["expires_at"]
        status = state.status
        try:
            while True:
                found = await self._retrying(
                    lambda: store.status_of(self._connection, self._batch_id)
                )
                if found is None:
                    return  # deleted, or expired meanwhile
                status = found
                if status == "cancelling" or time.time() >= expires_at:
                    break
                if time.monotonic() >= renew_at:
                    renew_at = time.monotonic() + RENEW_EVERY_S
                    if not await self._renew():
                        log.warning("batch %s: lease lost; another driver goes on", self._batch_id)
                        return
                while pending and len(self._in_flight) < self._settings.batch_window:
                    self._launch(pending.popleft(), state.record)
                if not pending and not self._in_flight:
                    break
                if self._in_flight:
                    await asyncio.wait(self._in_flight, timeout=SCAN_EVERY_S)
                else:
                    await asyncio.sleep(SCAN_EVERY_S)
        finally:
            await self._stop_in_flight()
        ending = "cancelled" if status == "cancelling" else "completed"
        if ending == "completed" and time.time() >= expires_at:
            ending = "expired"
            await self._record_expired(lines, state.record)
        await self._finish(state, ending)

    async def _lines(self, state: store.BatchState) -> list[Line] | None:
        """The batch's valid lines, read again from its input file (lines that failed
        validation already have their error lines)."""
        content = await store.file_content(self._connection, state.record["input_file_id"])
        if content is None:
            await self._fail(state, "The batch's input file no longer exists.")
            return None
        try:
            parsed = await asyncio.to_thread(
                parse_lines, content, state.record["endpoint"], self._settings
            )
        except MlxqError as exc:
            await self._fail(state, exc.message)
            return None
        return [line for line in parsed if isinstance(line, Line)]

    def _model(self, line: Line) -> str:
        return self._models.get(line.model, line.model)

    def _lane(self, model: str) -> str:
        """The batch's own lane beside the model's queue (shared/keys.py)."""
        return batch_lane_name(self._driver._submitter.queue_name(model), self._batch_id)

    def _launch(self, line: Line, record: dict, adopt: str | None = None) -> None:
        task = asyncio.create_task(self._answer(line, record, adopt))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _answer(self, line: Line, record: dict, adopt: str | None = None) -> None:
        """Run one line until it has an output or error line (or the batch stops). A line
        whose job a driver that died left running (``adopt``: its id) is followed to its end
        first: a takeover costs no generation again."""
        endpoint = ENDPOINTS[record["endpoint"]]
        waiting = Backoff(first_s=1.0, cap_s=30.0)
        lost_retries = WORKER_LOST_RETRIES
        while True:
            request = endpoint.job(line.body, self._settings, self._model(line)).model_copy(
                update={"deadline": float(record["expires_at"])}
            )
            lane: str | None = None
            if adopt is not None:
                job_id, adopt = adopt, None
                lane = self._lane(request.model)
            else:
                job_id = uuid.uuid4().hex
                await self._note_attempt(line.number, job_id)
            try:
                done = await self._driver._runner.run(
                    request, job_id=job_id, batch_id=self._batch_id, adopt_from=lane
                )
            except WAITING_FOR_WORKERS as exc:
                log.info("batch %s line %d: waiting (%s)", self._batch_id, line.number, exc)
                await asyncio.sleep(waiting.next_delay())
                continue
            except MlxqError as exc:
                if isinstance(exc, JobTimedOut) and time.time() >= record["expires_at"]:
                    return  # the window closed: recorded as expired at the end
                if exc.code == ErrorCode.WORKER_LOST and lost_retries > 0:
                    lost_retries -= 1
                    continue
                text = error_line(job_id, line.custom_id, request.request_id, exc)
                await self._record(line.number, text, ok=False)
                return
            body = endpoint.answer(line.body, request, done)
            if isinstance(body, BaseModel):
                body = body.model_dump(mode="json")
            response = {"status_code": 200, "request_id": request.request_id, "body": body}
            await self._record(line.number, result_line(job_id, line.custom_id, response), True)
            return

    async def _note_attempt(self, number: int, job_id: str) -> None:
        """The line's job, recorded before it is enqueued: a driver that takes over adopts it."""
        await self._retrying(
            lambda: store.note_attempt(self._connection, self._batch_id, number, job_id)
        )

    async def _record(self, number: int, text: str, ok: bool) -> None:
        await self._retrying(
            lambda: store.record_result(self._connection, self._batch_id, number, text, ok)
        )

    async def _record_expired(self, lines: list[Line], record: dict) -> None:
        """Lines the completion window closed on get an error line, as OpenAI writes them."""
        done = await store.done_lines(self._connection, self._batch_id)
        for line in lines:
            if line.number in done:
                continue
            error = {
                "code": "batch_expired",
                "message": "This request could not be run before the batch's completion "
                f"window ({record['completion_window']}) closed.",
            }
            text = json.dumps(
                {
                    "id": f"batch_req_line{line.number}",
                    "custom_id": line.custom_id,
                    "response": None,
                    "error": error,
                }
            )
            await self._record(line.number, text, ok=False)

    async def _stop_in_flight(self) -> None:
        """Cancel the lines still running: each one's job is taken out of the queue or
        stopped by its worker (the runner's own cancellation)."""
        for task in self._in_flight:
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _renew(self) -> bool:
        try:
            return await store.renew_lease(
                self._connection, self._batch_id, self._driver._runner.instance, LEASE_TTL_S
            )
        except RedisError:
            return True  # nobody else can take it while Redis is away; check again soon

    async def _finish(self, state: store.BatchState, status: str) -> None:
        """Write the output and error files, then end the batch with ``status``. A cancelled
        batch goes from "cancelling" straight to "cancelled" (as OpenAI's), so a driver that
        takes over a half-finished cancel still ends it as cancelled."""
        if status != "cancelled":
            await self._retrying(
                lambda: store.set_status(self._connection, self._batch_id, "finalizing")
            )
        files: dict[str, str] = {}
        output_ttl = state.record.get("output_ttl_s") or self._settings.batch_retention
        for ok, field in ((True, "output_file_id"), (False, "error_file_id")):
            lines = await self._retrying(
                lambda: store.results(self._connection, self._batch_id, ok)  # noqa: B023
            )
            if lines:
                content = ("\n".join(lines) + "\n").encode()
                kind = "output" if ok else "error"
                meta = new_file_meta(
                    f"{self._batch_id}_{kind}.jsonl", "batch_output", len(content), output_ttl
                )
                await self._retrying(
                    lambda: store.put_file(self._connection, meta, content, output_ttl)  # noqa: B023
                )
                files[field] = meta["id"]
        await self._retrying(
            lambda: store.end_batch(
                self._connection,
                self._batch_id,
                status,
                self._settings.batch_retention,
                **files,
            )
        )
        for lane in self._lanes:  # empty now: off RQ's list of queues (rq info, /fleet)
            await self._retrying(lambda: forget_queue_async(self._connection, lane))  # noqa: B023
        log.info("batch %s: %s", self._batch_id, status)

    async def _fail(self, state: store.BatchState, message: str) -> None:
        errors = [*state.errors, {"code": "invalid_batch", "message": message, "line": None}]
        await store.end_batch(
            self._connection,
            self._batch_id,
            "failed",
            self._settings.batch_retention,
            errors=json.dumps(errors),
        )

    async def _retrying(self, write: Callable[[], Awaitable[T]]) -> T:
        """A Redis call, waiting out a Redis restart (the batch goes on where it was)."""
        backoff = Backoff(first_s=0.2, cap_s=5.0)
        while True:
            try:
                result = await write()
            except RedisError as exc:
                raise_if_cancelled()
                log.warning("batch %s: Redis unavailable (%s); retrying", self._batch_id, exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            raise_if_cancelled()
            return result


def raise_if_cancelled() -> None:
    """redis.asyncio can swallow a task's cancellation (it reconnects, or raises a connection
    error instead): a loop that goes on after a Redis call honours it here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
