"""Waiting for job events: one pub/sub connection per API process multiplexes every wait.

Each waiting request subscribes to its job's channel on the shared connection and gets an
asyncio queue; no thread and no Redis connection per request. Pub/sub can drop messages (a
reconnect), so a reader that sees a gap, or silence, re-reads the job's durable event stream.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared import protocol
from shared.backoff import Backoff
from shared.redis_clients import async_subscriber
from shared.schemas import JobEvent

log = logging.getLogger(__name__)

CATCH_UP_AFTER_S = 5.0
"""Silence after which a waiter re-reads its job's stream, in case pub/sub lost a message."""
CLOSE_WAIT_S = 2.0
"""On shutdown, how long the hub waits for its last unsubscribes."""
READ_TIMEOUT_S = 1.0
"""One wait of the hub's reader; it loops, so this only bounds how late a close is seen."""


class EventHub:
    def __init__(self, redis_url: str) -> None:
        self._client = async_subscriber(redis_url)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._queues: dict[bytes, asyncio.Queue[bytes]] = {}
        self._reader: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        # One subscription always held, so the reader always waits on the socket (no idle
        # polling), and so concurrent first subscribes cannot each open a connection.
        self._anchor = protocol.api_anchor_channel(uuid.uuid4().hex)
        self._subscribe_lock = asyncio.Lock()

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_forever(), name="mlxq-event-hub")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._background:  # unsubscribes of requests that ended just now
            await asyncio.wait(self._background, timeout=CLOSE_WAIT_S)
        with contextlib.suppress(RedisError, RuntimeError):
            await self._pubsub.aclose()
        await self._client.aclose()

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[asyncio.Queue[bytes]]:
        channel = protocol.job_events_channel(job_id)
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._queues[channel.encode()] = inbox
        try:
            async with self._subscribe_lock:
                await self._pubsub.subscribe(channel)
            yield inbox
        finally:
            self._queues.pop(channel.encode(), None)
            # Not awaited here: this also runs when the request's task is being cancelled.
            task = asyncio.create_task(self._unsubscribe(channel))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _unsubscribe(self, channel: str) -> None:
        with contextlib.suppress(RedisError, RuntimeError):
            await self._pubsub.unsubscribe(channel)

    async def _read_forever(self) -> None:
        backoff = Backoff(first_s=0.1, cap_s=2.0)
        while True:
            try:
                if not self._pubsub.subscribed:
                    async with self._subscribe_lock:
                        await self._pubsub.subscribe(self._anchor)
                message = await self._pubsub.get_message(timeout=READ_TIMEOUT_S)
                backoff.reset()
            except RedisError as exc:
                log.warning("event hub: Redis connection lost (%s); reconnecting", exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            if message is not None and message["type"] == "message":
                inbox = self._queues.get(message["channel"])
                if inbox is not None:
                    inbox.put_nowait(message["data"])


class JobEvents:
    """The events of one job in order, each once, whatever pub/sub delivered."""

    def __init__(self, job_id: str, inbox: asyncio.Queue[bytes], connection: aioredis.Redis):
        self._job_id = job_id
        self._inbox = inbox
        self._connection = connection
        self._next_seq = 0
        self._backlog: list[JobEvent] = []

    async def next(self, timeout: float) -> JobEvent | None:
        """The next event, or None when none came within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + timeout
        while not self._backlog:
            left = give_up_at - loop.time()
            if left <= 0:
                return None
            try:
                data = await asyncio.wait_for(self._inbox.get(), min(left, CATCH_UP_AFTER_S))
            except TimeoutError:
                await self._catch_up()
                continue
            event = protocol.decode_event(data)
            if event.seq == self._next_seq:
                self._backlog.append(event)
            elif event.seq > self._next_seq:
                await self._catch_up()
        event = self._backlog.pop(0)
        self._next_seq = event.seq + 1
        return event

    async def catch_up(self) -> None:
        """Read what the job's stream holds now (a job followed after it began)."""
        await self._catch_up()

    async def _catch_up(self) -> None:
        """Re-read the job's stream. While Redis is briefly unreachable, try again at the
        next silence: the job may well complete, and its events wait in the stream."""
        try:
            events = await protocol.read_events_async(self._connection, self._job_id)
        except (ConnectionError, TimeoutError, RedisError) as exc:
            log.warning("job %s: cannot re-read its events yet (%s)", self._job_id, exc)
            return
        expected = self._next_seq + len(self._backlog)
        for event in events:
            if event.seq == expected:
                self._backlog.append(event)
                expected += 1
